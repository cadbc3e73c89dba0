"""Command choices from the catalog the bot runs with (KF2V_CATALOG_FILE included), set at start-up.

discord.py reads choices from decorators at import time; the cogs declare the options without choices and
fill them here when they are built, so a model added to the catalog file can be picked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from discord import app_commands

from bot.catalog import ModelSpec
from bot.discord_ui.translator import _

MAX_CHOICES = 25  # Discord's limit per option


def set_choices(command: app_commands.Command[Any, ..., Any], option: str, values: Iterable[str]) -> None:
    """Give `option` of this (per-cog-instance) command one choice per value, in order, without duplicates."""
    unique = list(dict.fromkeys(values))[:MAX_CHOICES]
    params = command._params  # discord.py has no public setter for choices after decoration
    params[option] = dataclasses.replace(
        params[option], choices=[app_commands.Choice(name=value, value=value) for value in unique]
    )


def describe(command: app_commands.Command[Any, ..., Any], option: str | None, key: str, **params: object) -> None:
    """Set the description of `command` (option None) or of one of its options to catalog text `key`
    filled with `params`, in every language (the descriptions that name models, lengths or resolutions)."""
    text = _(key, **params)
    if option is None:
        command.description = text.message
        command._locale_description = text  # discord.py reads this when it builds the translated payload
        return
    params_ = command._params
    params_[option] = dataclasses.replace(params_[option], description=text)


def lengths(models: Iterable[ModelSpec]) -> str:
    """'5 s' or '2-15 s': the shortest and longest video the models make (for descriptions)."""
    specs = list(models)
    if not specs:
        return "-"
    low = min(m.duration_range[0] for m in specs)
    high = max(m.duration_range[1] for m in specs)
    return f"{low} s" if low == high else f"{low}-{high} s"


def duration_ranges(models: Iterable[ModelSpec]) -> str:
    """'wan2.7-i2v: 2-15' for the models whose length can be chosen ('-' when none can)."""
    ranges = [f"{m.key}: {m.duration_range[0]}-{m.duration_range[1]}" for m in models if not m.fixed_duration]
    return ", ".join(ranges) or "-"


def describe_model_options(command: app_commands.Command[Any, ..., Any], models: list[ModelSpec], default: str) -> None:
    """The `model`, `resolution` (and `duration`, where the command has it) descriptions from the catalog."""
    describe(command, "model", "opt.model", default=default)
    resolutions = "/".join(dict.fromkeys(r for m in models for r in m.resolutions))
    defaults = "/".join(dict.fromkeys(m.default_resolution for m in models))
    describe(command, "resolution", "opt.resolution", resolutions=resolutions, defaults=defaults)
    if "duration" in command._params:
        describe(command, "duration", "opt.duration", ranges=duration_ranges(models))
