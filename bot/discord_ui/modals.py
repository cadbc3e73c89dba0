"""The modals: Remix (edit a finished job's options), Animate (a prompt for a message's two images) and
Effect (an effect template for a message's one image).

discord.py 2.7 sends each input wrapped in a `ui.Label` (component type 18). A modal can only be the first
answer to a button or a command (never after a deferral, never to a modal submit), so whatever the modal
needs is read before it is sent, and everything slow (downloads, checks, admission) happens after submit.
The submit hands plain values to a callback; the callback defers at once and owns its errors.
Open modals live in this process: a submit after a restart is answered by nothing (Discord tells the
user the interaction failed; nothing was reserved).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.catalog import ModelSpec
from bot.i18n import t
from bot.jobs.models import Job
from bot.jobs.service import RemixEdits

# Discord's own ceiling for a text input value (https://discord.com/developers/docs/components/reference#text-input).
TEXT_INPUT_MAX = 4000
REMIX_MODAL_ID = "kf2v:remix-modal:{job_id}"
ANIMATE_MODAL_ID = "kf2v:animate-modal:{message_id}"
EFFECT_MODAL_ID = "kf2v:effect-modal:{message_id}"
SELECT_OPTIONS_MAX = 25  # Discord's ceiling for a select's options

RemixSubmitted = Callable[[discord.Interaction[Any], RemixEdits], Awaitable[None]]
PromptSubmitted = Callable[[discord.Interaction[Any], str, str | None], Awaitable[None]]
TemplateSubmitted = Callable[[discord.Interaction[Any], str], Awaitable[None]]


def _label(text: str) -> str:
    return text[:45]  # a Label's text is at most 45 characters


def _prompt_input(default: str | None, limit: int, *, required: bool) -> discord.ui.TextInput[Any]:
    # A stored prompt longer than today's limit is still shown whole (Discord refuses a default over
    # max_length); the checks after submit name the limit.
    text = default[:TEXT_INPUT_MAX] if default else None
    return discord.ui.TextInput(
        style=discord.TextStyle.paragraph,
        default=text,
        max_length=min(max(limit, len(text or "")), TEXT_INPUT_MAX),
        required=required,
    )


def has_duration_choice(spec: ModelSpec | None) -> bool:
    return spec is not None and spec.duration_range[0] < spec.duration_range[1]


class RemixModal(discord.ui.Modal):
    """Pre-filled with the job's prompt, negative prompt, resolution (and duration where the model has a
    range); submitting hands the edits on. At most five inputs, as Discord allows."""

    def __init__(self, job: Job, spec: ModelSpec | None, locale: str, on_submit: RemixSubmitted) -> None:
        super().__init__(
            title=_label(t(locale, "remix.title", job_id=job.id)), custom_id=REMIX_MODAL_ID.format(job_id=job.id)
        )
        self._on_submit = on_submit
        request = job.request
        is_effect = request.template is not None
        prompt_max = spec.prompt_max_chars if spec is not None else TEXT_INPUT_MAX
        negative_max = spec.negative_prompt_max_chars if spec is not None else TEXT_INPUT_MAX
        self.prompt = _prompt_input(request.prompt, prompt_max, required=not is_effect)
        self.negative = _prompt_input(request.negative_prompt, negative_max, required=False)
        self.add_item(discord.ui.Label(text=_label(t(locale, "modal.prompt")), component=self.prompt))
        self.add_item(discord.ui.Label(text=_label(t(locale, "modal.negative_prompt")), component=self.negative))
        resolutions = spec.resolutions if spec is not None else (request.resolution,)
        self.resolution: discord.ui.Select[Any] = discord.ui.Select(
            options=[discord.SelectOption(label=r, value=r, default=r == request.resolution) for r in resolutions],
            min_values=1,
            max_values=1,
        )
        self.add_item(discord.ui.Label(text=_label(t(locale, "modal.resolution")), component=self.resolution))
        self.duration: discord.ui.TextInput[Any] | None = None
        current = getattr(request, "duration", None)  # only once the request carries a duration
        if has_duration_choice(spec) and isinstance(current, int) and spec is not None:
            low, high = spec.duration_range
            self.duration = discord.ui.TextInput(default=str(current), max_length=3, required=True)
            label = t(locale, "modal.duration", low=low, high=high)
            self.add_item(discord.ui.Label(text=_label(label), component=self.duration))

    async def on_submit(self, interaction: discord.Interaction[Any], /) -> None:
        duration: int | None = None
        if self.duration is not None:
            text = self.duration.value.strip()
            duration = int(text) if text.isdecimal() else -1  # not a number: the duration check names the range
        edits = RemixEdits(
            prompt=self.prompt.value,
            negative_prompt=self.negative.value or None,
            resolution=self.resolution.values[0] if self.resolution.values else "",
            duration=duration,
        )
        await self._on_submit(interaction, edits)


class AnimateModal(discord.ui.Modal):
    """The prompt (and an optional negative prompt) for animating a message's two images."""

    def __init__(self, message_id: int, spec: ModelSpec | None, locale: str, on_submit: PromptSubmitted) -> None:
        super().__init__(
            title=_label(t(locale, "animate.title")), custom_id=ANIMATE_MODAL_ID.format(message_id=message_id)
        )
        self._on_submit = on_submit
        prompt_max = spec.prompt_max_chars if spec is not None else TEXT_INPUT_MAX
        negative_max = spec.negative_prompt_max_chars if spec is not None else TEXT_INPUT_MAX
        self.prompt = _prompt_input(None, prompt_max, required=True)
        self.negative = _prompt_input(None, negative_max, required=False)
        self.add_item(discord.ui.Label(text=_label(t(locale, "modal.prompt")), component=self.prompt))
        self.add_item(discord.ui.Label(text=_label(t(locale, "modal.negative_prompt")), component=self.negative))

    async def on_submit(self, interaction: discord.Interaction[Any], /) -> None:
        await self._on_submit(interaction, self.prompt.value, self.negative.value or None)


class EffectModal(discord.ui.Modal):
    """The effect template for animating a message's one image (the effect model's templates in this region)."""

    def __init__(self, message_id: int, templates: dict[str, str], locale: str, on_submit: TemplateSubmitted) -> None:
        super().__init__(
            title=_label(t(locale, "animate.effect_title")), custom_id=EFFECT_MODAL_ID.format(message_id=message_id)
        )
        self._on_submit = on_submit
        options = [
            discord.SelectOption(label=f"{name} ({key})"[:100] if name else key, value=key)
            for key, name in list(templates.items())[:SELECT_OPTIONS_MAX]
        ]
        self.template: discord.ui.Select[Any] = discord.ui.Select(options=options, min_values=1, max_values=1)
        self.add_item(discord.ui.Label(text=_label(t(locale, "modal.effect")), component=self.template))

    async def on_submit(self, interaction: discord.Interaction[Any], /) -> None:
        await self._on_submit(interaction, self.template.values[0] if self.template.values else "")
