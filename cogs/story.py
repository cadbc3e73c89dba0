"""/kf2v-story: three to six keyframes and a prompt (one for all, or one per segment with `|`) -> one video.

This module needs PyAV (the `video` extra): it imports the join. bot.app loads it by name only when PyAV is
installed (`stories_available`), so the plain install never imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import Choice
from discord.ext import commands

from bot.discord_ui.attachments import AttachmentReader
from bot.discord_ui.checks import Owners, require_post_permissions
from bot.discord_ui.options import ModelChoices, describe_model_options
from bot.discord_ui.story import DiscordStoryNotifier, StoryComponents, open_story_conversation
from bot.discord_ui.translator import _
from bot.jobs.models import JobRequest
from bot.jobs.service import JobService
from bot.jobs.story.join import join_segments
from bot.jobs.story.service import SegmentRouter, StoryDraft, StoryService
from bot.jobs.story.store import StoryStore
from cogs.generate import read_attachment

log = logging.getLogger(__name__)


class StoryCog(commands.Cog):
    def __init__(self, stories: StoryService, *, image_max_bytes: int, attachments: AttachmentReader) -> None:
        self.stories = stories
        self.image_max_bytes = image_max_bytes
        self.attachments = attachments
        self._resumed = False
        models = stories.jobs.models()
        # Suggestions filtered by the model chosen so far; JobService.check_text still checks what is typed.
        self.choices = ModelChoices(models, stories.jobs.catalog.default_model, stories.jobs.region)
        describe_model_options(self.kf2v_story, models, stories.jobs.catalog.default_model)

    @app_commands.command(name="kf2v-story", description=_("cmd.kf2v_story"))
    @app_commands.guild_only()
    @app_commands.describe(
        frame1=_("opt.frame1"),
        frame2=_("opt.frame2"),
        frame3=_("opt.frame3"),
        prompt=_("opt.story_prompt"),
        frame4=_("opt.frame_more"),
        frame5=_("opt.frame_more"),
        frame6=_("opt.frame_more"),
        model=_("opt.model"),
        resolution=_("opt.resolution"),
        seed=_("opt.seed"),
    )
    async def kf2v_story(
        self,
        interaction: discord.Interaction[Any],
        frame1: discord.Attachment,
        frame2: discord.Attachment,
        frame3: discord.Attachment,
        prompt: str,
        frame4: discord.Attachment | None = None,
        frame5: discord.Attachment | None = None,
        frame6: discord.Attachment | None = None,
        model: str | None = None,
        resolution: str | None = None,
        seed: int | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # before any I/O: the 3 s rule
        assert interaction.guild_id is not None and interaction.channel_id is not None
        # Frames in order; an optional one left out closes the story there (frame6 without frame5 counts too).
        attachments = [a for a in (frame1, frame2, frame3, frame4, frame5, frame6) if a is not None]
        draft = StoryDraft(
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            user_id=interaction.user.id,
            locale=str(interaction.locale),
            request=JobRequest(model=model or "", resolution=resolution or "", prompt=prompt, seed=seed),
            frames=(),
        )
        require_post_permissions(interaction)
        await self.stories.precheck(draft, len(attachments))
        async with self.attachments.holding(*attachments):  # a burst waits its turn to download
            frames = tuple([await read_attachment(self.attachments, a, self.image_max_bytes) for a in attachments])
            story, _jobs = await self.stories.submit(StoryDraft(**{**_fields(draft), "frames": frames}))
            del frames  # the bytes go with the hold
        await open_story_conversation(interaction, story, self.stories)

    @kf2v_story.autocomplete("model")
    async def _story_models(self, interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        return self.choices.model_choices(str(interaction.locale), current)

    @kf2v_story.autocomplete("resolution")
    async def _story_resolutions(self, interaction: discord.Interaction[Any], current: str) -> list[Choice[str]]:
        return self.choices.resolution_choices(str(interaction.locale), interaction.namespace.model, current)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        # After a restart: carry on every unfinished story (join and post what is due, ask what was asked).
        if self._resumed:
            return
        self._resumed = True
        resumed = await self.stories.resume()
        if resumed:
            log.info("%d unfinished stories resumed", resumed)


def _fields(draft: StoryDraft) -> dict[str, Any]:
    return {name: getattr(draft, name) for name in StoryDraft.__dataclass_fields__}


async def install(
    bot: commands.Bot,
    jobs: JobService,
    router: SegmentRouter,
    owners: Owners,
    *,
    allowed_guilds: Collection[int],
    image_max_bytes: int,
    attachments: AttachmentReader,
) -> StoryService:
    """Stories on this bot: the service (joins with PyAV), its notifier, the command and the components."""
    stories = StoryService(jobs, StoryStore(jobs.store.database), join_segments)
    stories.notifier = DiscordStoryNotifier(bot)
    router.stories = stories
    await bot.add_cog(StoryCog(stories, image_max_bytes=image_max_bytes, attachments=attachments))
    bot.add_dynamic_items(*StoryComponents(stories, owners, allowed_guilds).items())
    return stories
