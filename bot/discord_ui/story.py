"""The Discord side of a story: its status message and thread, the joined video, and its two components.

One thread per story: the status message (each segment's state) starts it; the joined mp4 is posted there with
a **Redo segment** select; a story that can't be completed says what was charged and may offer a
**Deliver as far as it got** button. Both components carry the story id in their custom id (persistent across
restarts, like the job buttons); whoever uses them is checked against the story by StoryService.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import discord

from bot.catalog import format_cny
from bot.discord_ui.channels import (
    BEST_EFFORT_ERRORS,
    NETWORK_ERRORS,
    messageable,
    thread_locale,
    thread_or_channel,
    upload_limit,
)
from bot.discord_ui.checks import Owners, is_manager
from bot.discord_ui.errors import reply_error
from bot.discord_ui.persistent import ButtonItem, id_button, in_allowed_guild
from bot.discord_ui.render import NO_PINGS, channel_mention, clip, thread_name
from bot.discord_ui.results import unarchive
from bot.errors import InvalidInput, NotAllowed
from bot.i18n import t
from bot.jobs.ports import DeliveryError, Video
from bot.jobs.service import Actor
from bot.jobs.story.plan import SegmentStatus, StoryState
from bot.jobs.story.service import SegmentLinks, StoryService
from bot.jobs.story.store import Story

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0  # how long a post waits for the gateway's guilds after a start (the upload limit)

STORY_MARKER = "kf2v-story-{story_id}-{generation}"  # in the joined video's embed footer: found by a redelivery
PARTIAL_ID = "kf2v:story-partial:{story_id}"
CANCEL_STORY_ID = "kf2v:story-cancel:{story_id}"
REDO_ID = "kf2v:story-redo:{story_id}"
DELETE_STORY_ID = "kf2v:story-delete:{story_id}"
DETAILS_STORY_ID = "kf2v:story-details:{story_id}"
_SEGMENT_COLOURS = {
    SegmentStatus.WAITING: "⏳",
    SegmentStatus.RUNNING: "🎬",
    SegmentStatus.READY: "✅",
    SegmentStatus.RETRYING: "🔁",
    SegmentStatus.FAILED: "❌",
    SegmentStatus.CANCELED: "⛔",
}


def story_embed(story: Story, statuses: Sequence[SegmentStatus], locale: str | None) -> discord.Embed:
    embed = discord.Embed(title=t(locale, "story.title", story_id=story.id, segments=story.segments))
    lines = []
    for k, status in enumerate(statuses):
        state = t(locale, f"story.segment.{status.value}")
        prompt = clip(story.prompts[k], 80)
        lines.append(
            t(locale, "story.segment_line", mark=_SEGMENT_COLOURS[status], segment=k + 1, first=k + 1, last=k + 2,
              state=state, prompt=prompt)
        )  # fmt: skip
    embed.description = "\n".join(lines)
    embed.add_field(name=t(locale, "status.model"), value=f"`{story.model}` · {story.resolution}", inline=True)
    embed.add_field(name=t(locale, "story.reserved"), value=f"¥{format_cny(story.cost_reserved)}", inline=True)
    embed.add_field(name=t(locale, "status.requester"), value=f"<@{story.user_id}>", inline=True)
    return embed


def redo_view(story: Story, locale: str | None) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    select: discord.ui.Select[Any] = discord.ui.Select(
        custom_id=REDO_ID.format(story_id=story.id),
        placeholder=t(locale, "story.redo"),
        options=[
            discord.SelectOption(
                label=t(locale, "story.redo_option", segment=k + 1, first=k + 1, last=k + 2),
                value=str(k),
                description=clip(story.prompts[k], 100),
            )
            for k in range(story.segments)
        ],
    )
    view.add_item(select)
    view.add_item(details_story_button(story, locale))
    view.add_item(delete_story_button(story, locale))
    return view


def delete_story_button(story: Story, locale: str | None) -> discord.ui.Button[Any]:
    """Delete under a posted story (issue 19): the requester, the server's managers and the owners."""
    return discord.ui.Button(
        custom_id=DELETE_STORY_ID.format(story_id=story.id),
        label=t(locale, "button.delete"),
        style=discord.ButtonStyle.danger,
    )


def details_story_button(story: Story, locale: str | None) -> discord.ui.Button[Any]:
    """Details under a posted story (issue 19): any member of its server, privately."""
    return discord.ui.Button(
        custom_id=DETAILS_STORY_ID.format(story_id=story.id),
        label=t(locale, "button.details"),
        style=discord.ButtonStyle.secondary,
    )


def story_details(story: Story, actual_prompts: dict[int, str], charged: int, locale: str) -> tuple[str, discord.Embed]:
    """(content with the copyable /kf2v-story line, embed with every segment's prompt and what the provider used
    for it, the model, resolution, seed, cost)."""
    lines = []
    for k, prompt in enumerate(story.prompts):
        shown = clip(prompt, 600)
        lines.append(t(locale, "story.details_segment", segment=k + 1, first=k + 1, last=k + 2, prompt=shown))
        if actual_prompts.get(k):
            lines.append("> " + clip(" ".join(actual_prompts[k].split()), 600))
    title = t(locale, "story.details_title", story_id=story.id)
    embed = discord.Embed(title=title, description=clip("\n".join(lines), 4000))
    embed.add_field(name=t(locale, "status.model"), value=story.model, inline=True)
    embed.add_field(name=t(locale, "details.resolution"), value=story.resolution, inline=True)
    seed = str(story.seed) if story.seed is not None else t(locale, "details.seed_provider")
    embed.add_field(name=t(locale, "result.seed"), value=seed, inline=True)
    embed.add_field(name=t(locale, "status.cost"), value=f"¥{format_cny(charged)}", inline=True)
    embed.add_field(name=t(locale, "status.requester"), value=f"<@{story.user_id}>", inline=True)
    prompts = " | ".join(" ".join(p.split()).replace("|", "/").replace("`", "ˋ") for p in story.prompts)
    line = f"/kf2v-story prompt:{prompts} model:{story.model} resolution:{story.resolution}"
    if story.seed is not None:
        line += f" seed:{story.seed}"
    content = t(locale, "story.details_command", frames=len(story.frames)) + "\n```\n" + clip(line, 1800) + "\n```"
    return content, embed


def posted_view(story: Story, locale: str | None, *, partial: bool) -> discord.ui.View:
    """What sits under the posted video: Redo and Delete; Delete only for a story delivered as far as it got."""
    if not partial:
        return redo_view(story, locale)
    view = discord.ui.View(timeout=None)
    view.add_item(details_story_button(story, locale))
    view.add_item(delete_story_button(story, locale))
    return view


def status_view(story: Story, locale: str | None) -> discord.ui.View:
    """Cancel while the story runs; nothing once it has ended."""
    view = discord.ui.View(timeout=None)
    if story.state is StoryState.RUNNING:
        view.add_item(
            discord.ui.Button(
                custom_id=CANCEL_STORY_ID.format(story_id=story.id),
                label=t(locale, "story.cancel_button"),
                style=discord.ButtonStyle.secondary,
            )
        )
    return view


def partial_view(story: Story, locale: str | None) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(
        discord.ui.Button(
            custom_id=PARTIAL_ID.format(story_id=story.id),
            label=t(locale, "story.partial_button"),
            style=discord.ButtonStyle.primary,
        )
    )
    return view


class DiscordStoryNotifier:
    """StoryService's notifier: edits the story's status message and posts in its thread with the bot token."""

    def __init__(self, client: discord.Client) -> None:
        self.bot = client

    def locale_for(self, story: Story) -> str:
        return thread_locale(self.bot, story.guild_id, story.locale)

    async def _channel(self, channel_id: int) -> discord.abc.Messageable:
        return await messageable(self.bot, channel_id)

    async def _target(self, story: Story) -> discord.abc.Messageable:
        return await thread_or_channel(self.bot, story.thread_id, story.channel_id, f"story {story.id}")

    async def story_updated(self, story: Story, statuses: Sequence[SegmentStatus]) -> None:
        if not story.status_message_id:
            return
        try:
            channel = await self._channel(story.channel_id)
            message = channel.get_partial_message(story.status_message_id)  # type: ignore[attr-defined]
            locale = self.locale_for(story)
            await message.edit(
                embed=story_embed(story, statuses, locale), view=status_view(story, locale), allowed_mentions=NO_PINGS
            )
        except BEST_EFFORT_ERRORS as exc:
            log.info("status edit of story %s failed: %r", story.id, exc)

    async def story_deliver(
        self, story: Story, video: Video, *, partial: bool, redelivery: bool, links: SegmentLinks
    ) -> int | None:
        locale = self.locale_for(story)
        try:
            target = await self._target(story)
            if redelivery:
                earlier = await self._posted(target, story)
                if earlier is not None:
                    log.info("story %s was already posted before a restart", story.id)
                    return earlier
            return await self._post(target, story, video, locale, partial, links)
        except DeliveryError:
            raise
        except discord.NotFound as exc:
            raise DeliveryError(f"channel gone ({exc.code})", permanent=True) from exc
        except discord.Forbidden as exc:  # a permission can be granted again: the story retries (issue 17)
            raise DeliveryError(f"missing permission ({exc.code})") from exc
        except discord.HTTPException as exc:
            raise DeliveryError(f"discord error {exc.status}/{exc.code}") from exc
        except NETWORK_ERRORS as exc:
            raise DeliveryError(f"network: {type(exc).__name__}") from exc

    async def _posted(self, target: discord.abc.Messageable, story: Story) -> int | None:
        marker = STORY_MARKER.format(story_id=story.id, generation=story.generation)
        me = self.bot.user.id if self.bot.user else None
        async for message in target.history(limit=50):
            if message.author.id == me and any(e.footer and e.footer.text == marker for e in message.embeds):
                return message.id
        return None

    async def _post(
        self,
        target: discord.abc.Messageable,
        story: Story,
        video: Video,
        locale: str,
        partial: bool,
        links: SegmentLinks,
    ) -> int:
        limit = await upload_limit(self.bot, story.guild_id, READY_TIMEOUT_S)  # the real one, never a guess
        mention = discord.AllowedMentions(users=[discord.Object(story.user_id)], everyone=False, roles=False)
        embed = discord.Embed(colour=discord.Colour.green())
        embed.set_footer(text=STORY_MARKER.format(story_id=story.id, generation=story.generation))
        key = "story.ready_partial" if partial else "story.ready"
        text = t(locale, key, user=f"<@{story.user_id}>", story_id=story.id)
        view = posted_view(story, locale, partial=partial)
        if video.size <= limit and await asyncio.to_thread(Path(video.path).exists):
            try:
                sent = await target.send(
                    text,
                    embed=embed,
                    # Not "kf2v-<job id>.mp4": that name means one job's video.
                    file=discord.File(Path(video.path), filename=f"story-{story.id}.mp4"),
                    view=view or discord.utils.MISSING,
                    allowed_mentions=mention,
                )
                return sent.id
            except discord.HTTPException as exc:
                if exc.status != 413 and exc.code != 40005:
                    raise
        # Too large to upload. The joined video exists only here (it is made locally); the provider still has
        # each segment, so those links are the fallback, in order.
        segment_links = await links()
        if segment_links:
            lines = [
                t(locale, "story.link_line", segment=k + 1, url=url,
                  expires_ts=int((expires or datetime.now(UTC) + timedelta(hours=24)).timestamp()))
                for k, (url, expires) in enumerate(segment_links)
            ]  # fmt: skip
            text = t(locale, "story.links", user=f"<@{story.user_id}>", story_id=story.id,
                     size_mb=f"{video.size / 1048576:.1f}")  # fmt: skip
            sent = await target.send(
                clip("\n".join([text, *lines]), 2000),
                embed=embed,
                view=view or discord.utils.MISSING,
                allowed_mentions=mention,
            )
            return sent.id
        # No link to any segment either (the provider's trouble): say so and how to get a smaller one.
        sent = await target.send(
            t(locale, "story.too_large", user=f"<@{story.user_id}>", story_id=story.id,
              size_mb=f"{video.size / 1048576:.1f}"),
            embed=embed, view=view or discord.utils.MISSING, allowed_mentions=mention,
        )  # fmt: skip
        return sent.id

    async def story_failed(
        self, story: Story, *, charged: int, ready: int, can_deliver_partial: bool, reason: str = "story.failed"
    ) -> None:
        locale = self.locale_for(story)
        text = t(locale, reason, user=f"<@{story.user_id}>", story_id=story.id, charged=format_cny(charged))
        if can_deliver_partial:
            text += "\n" + t(locale, "story.partial_offer", ready=ready, segments=story.segments)
        mention = discord.AllowedMentions(users=[discord.Object(story.user_id)], everyone=False, roles=False)
        try:
            target = await self._target(story)
            view = partial_view(story, locale) if can_deliver_partial else discord.utils.MISSING
            await target.send(text, view=view, allowed_mentions=mention)
        except BEST_EFFORT_ERRORS as exc:
            log.warning("could not tell the thread of story %s about its failure: %r", story.id, exc)


async def open_story_conversation(interaction: discord.Interaction[Any], story: Story, stories: StoryService) -> None:
    """Post the story's status message with its first keyframe, start its thread, confirm privately."""
    locale = str(interaction.locale)
    statuses = [SegmentStatus.WAITING] * story.segments
    embed = story_embed(story, statuses, locale)
    first = stories.jobs.frame_path(story.frames[0])
    name = f"first.{first.suffix.lstrip('.')}"
    embed.set_thumbnail(url=f"attachment://{name}")
    channel = interaction.channel
    status: discord.Message | None = None
    thread_id: int | None = None
    if isinstance(channel, discord.abc.Messageable):
        try:
            status = await channel.send(
                embed=embed,
                file=discord.File(first, filename=name),
                view=status_view(story, locale),
                allowed_mentions=NO_PINGS,
            )
        except discord.HTTPException as exc:
            log.warning("story %s: could not post its status message (%s)", story.id, exc.status)
    if status is not None:
        if isinstance(channel, discord.TextChannel):
            try:
                thread = await status.create_thread(name=thread_name(story.prompts[0], story.id, "kf2v-story"))
                thread_id = thread.id
            except discord.HTTPException as exc:
                log.info("story %s: no thread (%s); replies go to the channel", story.id, exc.status)
        elif isinstance(channel, discord.Thread):
            thread_id = channel.id
        await stories.attach_conversation(story.id, thread_id=thread_id, status_message_id=status.id)
    where = channel_mention(thread_id) if thread_id else (status.jump_url if status is not None else "")
    text = t(
        locale, "story.accepted", story_id=story.id, segments=story.segments,
        cost=format_cny(story.cost_reserved), where=where,
    )  # fmt: skip
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
    # Segments may have moved while the conversation opened: show where they are now.
    await stories.advance(story.id)


SelectItem = discord.ui.DynamicItem[discord.ui.Select[Any]]


async def remove_story_messages(client: discord.Client, story: Story, locale: str) -> int:
    """Delete the story's posted video and its status message, take the prompt out of the name of the thread
    opened for it and say there who removed it (best effort per message; returns how many were deleted)."""
    where_id = story.thread_id or story.channel_id
    deleted = 0
    if story.thread_id:
        await unarchive(client, story.thread_id, f"story {story.id}")
    for channel_id, message_id in ((where_id, story.joined_message_id), (story.channel_id, story.status_message_id)):
        if not message_id:
            continue
        try:
            channel: Any = await messageable(client, channel_id)
            await channel.get_partial_message(message_id).delete()
            deleted += 1
        except discord.NotFound:
            pass  # already gone (deleted by a moderator)
        except BEST_EFFORT_ERRORS as exc:
            log.warning("story %s: message %s not deleted: %r", story.id, message_id, exc)
    if story.thread_id:
        try:
            thread: Any = await messageable(client, story.thread_id)
            if isinstance(thread, discord.Thread) and story.thread_id == story.status_message_id:
                await thread.edit(name=clip(t(locale, "story.thread_deleted", story_id=story.id), 100))
            note = t(locale, "story.deleted_note", story_id=story.id, user=f"<@{story.deleted_by}>")
            await thread.send(note, allowed_mentions=NO_PINGS)
        except BEST_EFFORT_ERRORS as exc:
            log.info("story %s: thread not renamed or no note after delete: %r", story.id, exc)
    return deleted


class StoryComponents:
    """What the story's button and select do; registered as dynamic items so they survive restarts."""

    def __init__(self, stories: StoryService, owners: Owners, allowed_guilds: Collection[int]) -> None:
        self.stories = stories
        self.owners = owners
        self.allowed_guilds = frozenset(allowed_guilds)

    async def allowed(self, interaction: discord.Interaction[Any]) -> bool:
        return await in_allowed_guild(interaction, self.allowed_guilds)

    async def actor(self, interaction: discord.Interaction[Any], guild_id: int) -> Actor:
        managing = interaction.guild_id == guild_id and is_manager(interaction)
        return Actor(interaction.user.id, is_manager=managing, is_owner=await self.owners.is_owner(interaction.user.id))

    async def deliver_partial(self, interaction: discord.Interaction[Any], story_id: int) -> None:
        locale = str(interaction.locale)
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            story = await self.stories.stories.get(story_id)
            guild_id = story.guild_id if story is not None else 0
            await self.stories.deliver_partial(story_id, await self.actor(interaction, guild_id))
            await interaction.followup.send(t(locale, "story.partial_chosen", story_id=story_id), ephemeral=True)
        except Exception as exc:
            await reply_error(interaction, exc)

    async def cancel(self, interaction: discord.Interaction[Any], story_id: int) -> None:
        locale = str(interaction.locale)
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            story = await self.stories.stories.get(story_id)
            guild_id = story.guild_id if story is not None else 0
            await self.stories.cancel(story_id, await self.actor(interaction, guild_id))
            await interaction.followup.send(t(locale, "story.cancel_done", story_id=story_id), ephemeral=True)
        except Exception as exc:
            await reply_error(interaction, exc)

    async def redo(self, interaction: discord.Interaction[Any], story_id: int, values: Sequence[str]) -> None:
        locale = str(interaction.locale)
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            if interaction.guild_id is None or not values or not values[0].isdigit():
                raise InvalidInput("story.no_redo")
            segment = int(values[0])
            story = await self.stories.stories.get(story_id)
            if story is None or story.guild_id != interaction.guild_id:
                raise NotAllowed("job.not_yours")  # a select only spends the budget of the guild it is in
            job = await self.stories.redo(story_id, segment, await self.actor(interaction, story.guild_id))
            await interaction.followup.send(
                t(locale, "story.redo_started", segment=segment + 1, story_id=story_id, job_id=job.id,
                  cost=format_cny(job.cost_reserved)),
                ephemeral=True,
            )  # fmt: skip
        except Exception as exc:
            await reply_error(interaction, exc)

    async def delete(self, interaction: discord.Interaction[Any], story_id: int) -> None:
        """Take the story's video down: its post and status message go, who did it is recorded; what it cost
        stays spent, and the presser is told so."""
        locale = str(interaction.locale)
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            story = await self.stories.stories.get(story_id)
            if story is None or interaction.guild_id is None:
                raise InvalidInput("story.unknown")
            actor = await self.actor(interaction, story.guild_id)
            deleted = await self.stories.delete_result(story_id, actor, guild_id=interaction.guild_id)
            thread_language = thread_locale(interaction.client, deleted.guild_id, deleted.locale)
            await remove_story_messages(interaction.client, deleted, thread_language)
            charged = await self.stories.stories.charged(story_id)
            text = t(locale, "story.deleted", story_id=story_id, cost=format_cny(charged))
            await interaction.followup.send(text, ephemeral=True)
        except Exception as exc:
            await reply_error(interaction, exc)

    async def details(self, interaction: discord.Interaction[Any], story_id: int) -> None:
        """Every segment's prompt and what the provider used, the options, the cost, a copyable /kf2v-story line;
        privately, to any member of the story's server."""
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            story = await self.stories.stories.get(story_id)
            if story is None or story.guild_id != interaction.guild_id:
                raise NotAllowed("job.not_yours")  # another server's story is never shown
            actual: dict[int, str] = {}
            for segment_job in await self.stories.stories.segment_jobs(story_id):  # oldest first: the newest wins
                job = await self.stories.jobs.get(segment_job.job_id)
                if job.actual_prompt:
                    actual[segment_job.segment] = job.actual_prompt
            charged = await self.stories.stories.charged(story_id)
            content, embed = story_details(story, actual, charged, str(interaction.locale))
            await interaction.followup.send(content, embed=embed, ephemeral=True, allowed_mentions=NO_PINGS)
        except Exception as exc:
            await reply_error(interaction, exc)

    def items(self) -> tuple[type[ButtonItem] | type[SelectItem], ...]:
        handler = self

        class RedoSelect(SelectItem, template=r"kf2v:story-redo:(?P<story_id>[0-9]{1,18})"):
            def __init__(self, story_id: int) -> None:
                super().__init__(discord.ui.Select(custom_id=REDO_ID.format(story_id=story_id)))
                self.story_id = story_id

            @classmethod
            async def from_custom_id(
                cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
            ) -> RedoSelect:
                return cls(int(match["story_id"]))

            async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
                return await handler.allowed(interaction)

            async def callback(self, interaction: discord.Interaction[Any]) -> None:
                await handler.redo(interaction, self.story_id, self.item.values)  # the chosen segment

        partial = id_button(PARTIAL_ID.removesuffix(":{story_id}"), self.deliver_partial, self.allowed)
        cancel = id_button(CANCEL_STORY_ID.removesuffix(":{story_id}"), self.cancel, self.allowed)
        delete = id_button(DELETE_STORY_ID.removesuffix(":{story_id}"), self.delete, self.allowed)
        details = id_button(DETAILS_STORY_ID.removesuffix(":{story_id}"), self.details, self.allowed)
        return partial, cancel, RedoSelect, delete, details
