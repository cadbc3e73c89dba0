"""Command choices from the catalog the bot runs with (KF2V_CATALOG_FILE included), set at start-up.

discord.py reads choices from decorators at import time; the cogs declare the options without choices and
fill them here when they are built, so a model added to the catalog file can be picked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from discord import app_commands

MAX_CHOICES = 25  # Discord's limit per option


def set_choices(command: app_commands.Command[Any, ..., Any], option: str, values: Iterable[str]) -> None:
    """Give `option` of this (per-cog-instance) command one choice per value, in order, without duplicates."""
    unique = list(dict.fromkeys(values))[:MAX_CHOICES]
    params = command._params  # discord.py has no public setter for choices after decoration
    params[option] = dataclasses.replace(
        params[option], choices=[app_commands.Choice(name=value, value=value) for value in unique]
    )
