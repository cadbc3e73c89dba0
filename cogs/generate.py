"""/kf2v and /kf2v-effect: parse options, defer at once, read attachments, hand over to JobService."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import Choice
from discord.ext import commands

from bot.discord_ui.attachments import AttachmentReader
from bot.discord_ui.checks import require_post_permissions
from bot.discord_ui.conversation import open_conversation
from bot.discord_ui.options import ModelChoices, describe, describe_model_options, lengths
from bot.discord_ui.results import open_variations
from bot.discord_ui.translator import _
from bot.jobs.images import size_refusal
from bot.jobs.models import JobRequest
from bot.jobs.probe import InvalidMedia
from bot.jobs.service import Draft, JobService


async def read_attachment(reader: AttachmentReader, attachment: discord.Attachment, max_bytes: int) -> bytes:
    """Bytes of an attachment: refused before download when Discord already says it is too big, and
    streamed with the cap (never more than the cap and a chunk held) when it says less than it is."""
    return await reader.read(attachment, max_bytes, lambda size: size_refusal(size, max_bytes))


async def read_audio(reader: AttachmentReader, attachment: discord.Attachment, max_bytes: int) -> bytes:
    """A driving audio file's bytes, refused like a frame when too big (its format and length are probed by
    JobService against the model's limits before anything is reserved)."""

    def too_large(size: int) -> InvalidMedia:
        return InvalidMedia("media.too_large", kind="audio", size_mb=_mb(size), limit_mb=_mb(max_bytes, up=False))

    return await reader.read(attachment, max_bytes, too_large)


def _mb(size: int, *, up: bool = True) -> float:
    tenths = size * 10 / (1024 * 1024)
    return (math.ceil(tenths) if up else math.floor(tenths)) / 10


class GenerateCog(commands.Cog):
    def __init__(self, jobs: JobService, *, image_max_bytes: int, attachments: AttachmentReader) -> None:
        self.jobs = jobs
        self.image_max_bytes = image_max_bytes
        self.attachments = attachments
        # Suggestions from the running catalog, filtered by the model chosen so far; whatever is typed is still
        # checked by JobService.check_text (a pair the model can't make is refused with the valid values named).
        models = jobs.models()
        self.choices = ModelChoices(models, jobs.catalog.default_model, jobs.region)
        # Descriptions that name models, lengths or resolutions come from the same catalog (issue 19).
        describe(self.kf2v, None, "cmd.kf2v", lengths=lengths(models))
        describe_model_options(self.kf2v, models, jobs.catalog.default_model)
        effect_models = ", ".join(m.key for m in models if m.templates) or "-"
        describe(self.kf2v_effect, "model", "opt.effect_model", models=effect_models)

    @app_commands.command(name="kf2v", description=_("cmd.kf2v"))
    @app_commands.guild_only()
    @app_commands.describe(
        first_frame=_("opt.first_frame"),
        last_frame=_("opt.last_frame"),
        prompt=_("opt.prompt"),
        negative_prompt=_("opt.negative_prompt"),
        model=_("opt.model"),
        resolution=_("opt.resolution"),
        prompt_extend=_("opt.prompt_extend"),
        seed=_("opt.seed"),
        duration=_("opt.duration"),
        sound=_("opt.sound"),
        audio=_("opt.audio"),
        count=_("opt.count"),
    )
    async def kf2v(
        self,
        interaction: discord.Interaction[Any],
        first_frame: discord.Attachment,
        last_frame: discord.Attachment,
        # Lengths and the seed range are checked in code, not by Discord, so the user gets our message
        # (with the count) and every client, including bots and old apps, meets the same rule.
        prompt: str,
        negative_prompt: str | None = None,
        model: str | None = None,
        resolution: str | None = None,
        prompt_extend: bool = True,
        seed: int | None = None,
        # Issue 12, appended after the contract's first eight. Ranges are the model's (checked in code, naming
        # the model's range); sound off is refused where the model can't switch it.
        duration: int | None = None,
        sound: bool | None = None,
        audio: discord.Attachment | None = None,
        # Issue 19, appended after `audio`: variations with different seeds, reserved whole (checked in code).
        count: int = 1,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # before any I/O: the 3 s rule
        request = JobRequest(
            model=model or "",
            resolution=resolution or "",
            prompt=prompt,
            negative_prompt=negative_prompt or None,
            prompt_extend=prompt_extend,
            seed=seed,
            duration=duration,
            sound=sound,
        )
        draft = replace(self._draft(interaction, request), audio_attached=audio is not None, count=count)
        await self._submit(interaction, draft, first_frame, last_frame, audio)

    @app_commands.command(name="kf2v-effect", description=_("cmd.kf2v_effect"))
    @app_commands.guild_only()
    @app_commands.describe(
        image=_("opt.image"),
        template=_("opt.template"),
        model=_("opt.effect_model"),
    )
    async def kf2v_effect(
        self,
        interaction: discord.Interaction[Any],
        image: discord.Attachment,
        template: str,
        model: str | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        draft = self._draft(interaction, JobRequest(model=model or self.jobs.effect_model(), template=template))
        await self._submit(interaction, draft, image, None)

    @kf2v.autocomplete("model")
    async def _kf2v_models(self, interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        return self.choices.model_choices(str(interaction.locale), current)

    @kf2v.autocomplete("resolution")
    async def _kf2v_resolutions(self, interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        return self.choices.resolution_choices(str(interaction.locale), interaction.namespace.model, current)

    @kf2v.autocomplete("duration")
    async def _kf2v_durations(self, interaction: discord.Interaction[Any], current: str) -> list[Choice[int]]:
        return self.choices.duration_choices(str(interaction.locale), interaction.namespace.model, current)

    @kf2v_effect.autocomplete("model")
    async def _effect_models(self, interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        effect_model = self.jobs.effect_model()
        return self.choices.model_choices(str(interaction.locale), current, with_templates=True, default=effect_model)

    @kf2v_effect.autocomplete("template")
    async def _effect_templates(self, interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        model, effect_model = interaction.namespace.model, self.jobs.effect_model()
        return self.choices.template_choices(str(interaction.locale), model, current, default=effect_model)

    def _draft(self, interaction: discord.Interaction[Any], request: JobRequest) -> Draft:
        assert interaction.guild_id is not None and interaction.channel_id is not None
        return Draft(
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            user_id=interaction.user.id,
            locale=str(interaction.locale),
            request=request,
        )

    async def _submit(
        self,
        interaction: discord.Interaction[Any],
        draft: Draft,
        first_frame: discord.Attachment,
        last_frame: discord.Attachment | None,
        audio: discord.Attachment | None = None,
    ) -> None:
        """Cheap checks first, then download, then hand over; refusals reach the tree's error handler."""
        require_post_permissions(interaction)
        jobs = self.jobs
        await jobs.precheck(draft)
        cap = self.image_max_bytes
        reader = self.attachments
        async with reader.holding(first_frame, last_frame, audio):  # a burst waits its turn to download
            first = await read_attachment(reader, first_frame, cap)
            last = await read_attachment(reader, last_frame, cap) if last_frame is not None else None
            audio_cap = jobs.audio_max_bytes(draft.request.model)
            sound = await read_audio(reader, audio, audio_cap) if audio is not None else None
            submitted = await jobs.submit_all_checked(replace(draft, first_image=first, last_image=last, audio=sound))
            del first, last, sound  # the bytes go with the hold, not after the conversation below
        if len(submitted) == 1:
            await open_conversation(interaction, submitted[0], jobs)
        else:
            await open_variations(interaction, jobs, submitted)
