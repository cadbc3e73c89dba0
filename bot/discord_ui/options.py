"""What the commands offer from the catalog the bot runs with (KF2V_CATALOG_FILE included), through public
discord.py API only.

- Suggestions: `model`, `resolution`, `duration` and `template` are autocompleted (`ModelChoices`): a model's
  options are only the ones the model chosen so far in the form (`interaction.namespace.model`) supports, in the
  member's language. Suggestions are a convenience: whatever a member types is still checked by
  `JobService.check_text` before anything is reserved, and refused with the valid values named.
- Descriptions that name models, lengths or resolutions are filled in when the cog is built (`describe`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from discord import app_commands

from bot.catalog import ModelSpec
from bot.discord_ui.translator import _
from bot.i18n import t

AUTOCOMPLETE_LIMIT = 25  # Discord's limit of suggestions per answer
CHOICE_NAME_LIMIT = 100  # Discord's limit on a suggestion's name


class ModelChoices:
    """The autocomplete suggestions of the commands that take a model, from the models offered in this region."""

    def __init__(self, models: Iterable[ModelSpec], default_model: str, region: str) -> None:
        self.models = {m.key: m for m in models}
        self.default_model = default_model
        self.region = region

    def chosen(self, typed: object, default: str | None = None) -> ModelSpec | None:
        """The model the form names so far, else `default` (the command's own): None when it names no model
        offered here (nothing to suggest; the command itself refuses that model)."""
        key = typed if isinstance(typed, str) and typed else default or self.default_model
        return self.models.get(key)

    def model_choices(
        self, locale: str, current: object, *, with_templates: bool = False, default: str | None = None
    ) -> list[app_commands.Choice[str]]:
        """Every model offered here ('wan2.7-i2v · 2-15 s · 720P/1080P'), the command's default marked."""
        default_key = default or self.default_model
        found = []
        for spec in self.models.values():
            if with_templates and not spec.templates_in(self.region):
                continue
            label = t(
                locale,
                "choice.model",
                model=spec.key,
                lengths=spec.describe_durations(),
                resolutions="/".join(spec.resolutions),
            )
            found.append(_choice(locale, label, spec.key, spec.key == default_key))
        return _matching(found, current)

    def resolution_choices(self, locale: str, model: object, current: object) -> list[app_commands.Choice[str]]:
        """The chosen model's resolutions, its default marked."""
        spec = self.chosen(model)
        if spec is None:
            return []
        found = [_choice(locale, r, r, r == spec.default_resolution) for r in spec.resolutions]
        return _matching(found, current)

    def duration_choices(self, locale: str, model: object, current: object) -> list[app_commands.Choice[int]]:
        """Every length the chosen model makes (2-15 s: fourteen), its default marked; the ones starting with
        what was typed first."""
        spec = self.chosen(model)
        if spec is None:
            return []
        low, high = spec.duration_range
        found = [
            _choice(locale, t(locale, "choice.seconds", seconds=s), s, s == spec.default_duration)
            for s in range(low, high + 1)
        ]
        typed = str(current or "").strip()
        starting = [c for c in found if str(c.value).startswith(typed)]
        return starting[:AUTOCOMPLETE_LIMIT]

    def template_choices(
        self, locale: str, model: object, current: object, *, default: str | None = None
    ) -> list[app_commands.Choice[str]]:
        """The chosen model's effect templates in this region, each with the name its documentation gives."""
        spec = self.chosen(model, default)
        if spec is None:
            return []
        found = []
        for template in spec.templates_in(self.region):
            documented = spec.template_names.get(template)
            label = t(locale, "choice.template", template=template, name=documented) if documented else template
            found.append(_choice(locale, label, template, False))
        return _matching(found, current)


def _choice(locale: str, label: str, value: Any, is_default: bool) -> app_commands.Choice[Any]:
    name = t(locale, "choice.default", label=label) if is_default else label
    return app_commands.Choice(name=name[:CHOICE_NAME_LIMIT], value=value)


def _matching(choices: list[app_commands.Choice[Any]], current: object) -> list[app_commands.Choice[Any]]:
    """The suggestions whose value or name contains what was typed (any case), at most Discord's 25."""
    typed = str(current or "").strip().casefold()
    return [c for c in choices if typed in str(c.value).casefold() or typed in c.name.casefold()][:AUTOCOMPLETE_LIMIT]


def describe(command: app_commands.Command[Any, ..., Any], option: str | None, key: str, **params: object) -> None:
    """Set the description of `command` (option None) or of one of its options to catalog text `key`
    filled with `params`, in every language (the descriptions that name models, lengths or resolutions).

    A command's text goes to its public `description` (Discord's default) and to `extras`, where
    `CatalogTranslator` finds the filled text for other languages. An option's goes through
    `app_commands.describe`, which (re)sets every option's description: the others are passed as they are.
    discord.py shares the option objects between a cog's command and the class's, so the last cog built sets
    them: one catalog per process, as the bot runs.
    """
    text = _(key, **params)
    if option is None:
        command.description = text.message
        command.extras = {**command.extras, "description": text}  # a new dict: copies of a command share one
        return
    current: dict[str, str | app_commands.locale_str] = {
        p.name: p.locale_description or p.description for p in command.parameters
    }
    current[option] = text
    app_commands.describe(**current)(command)


def has_option(command: app_commands.Command[Any, ..., Any], option: str) -> bool:
    """Whether the command takes `option`."""
    return command.get_parameter(option) is not None


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
    if has_option(command, "duration"):
        describe(command, "duration", "opt.duration", ranges=duration_ranges(models))
