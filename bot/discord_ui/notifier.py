"""The Discord side of `Notifier`: status embeds, thread posts, the video upload (or link), owner alerts.

Everything here uses the bot token (channel and message endpoints), never the interaction token, so a job
that waited an hour still lands. Status edits are coalesced to at most one every `edit_interval` seconds
per job (latest state wins).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
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
from bot.discord_ui.checks import Owners
from bot.discord_ui.render import NO_PINGS, STATE_COLOURS, clip, job_buttons, status_embed
from bot.i18n import t
from bot.jobs.models import ChargeState, Job, JobState
from bot.jobs.ports import DeliveryError, Progress, Video

log = logging.getLogger(__name__)

# What a video post needs (discord.Permissions attribute, the name in Discord's settings).
POST_PERMISSIONS = (
    ("view_channel", "View Channel"),
    ("send_messages", "Send Messages"),
    ("send_messages_in_threads", "Send Messages in Threads"),
    ("attach_files", "Attach Files"),
    ("embed_links", "Embed Links"),
    ("read_message_history", "Read Message History"),
)
MARKER = "kf2v-job-{job_id}"  # in the delivery's embed footer: lets a redelivery find an earlier post


class DiscordNotifier:
    """The domain's `Notifier` for Discord, built with the client it posts through and the owners it alerts."""

    def __init__(
        self, client: discord.Client, owners: Owners, *, edit_interval: float = 3.0, ready_timeout: float = 60.0
    ) -> None:
        self.bot = client
        self.owners = owners
        self.edit_interval = edit_interval
        self.ready_timeout = ready_timeout  # how long a delivery waits for the gateway's guilds after a start
        self._told_blocked: set[tuple[int, str]] = set()  # (guild, "permission"): told until a post goes through
        self._last_edit: dict[int, float] = {}
        self._pending_edit: dict[int, tuple[Job, Progress]] = {}
        self._flushers: dict[int, asyncio.Task[None]] = {}
        # Whether a delivered job gets the Extend button (the app sets it from the catalog: JobService).
        self.extendable: Callable[[Job], bool] = lambda job: False

    def locale_for(self, job: Job) -> str:
        """Thread messages follow the guild's language; fall back to the requester's."""
        return thread_locale(self.bot, job.guild_id, job.locale)

    async def _channel(self, channel_id: int) -> discord.abc.Messageable:
        return await messageable(self.bot, channel_id)

    async def _target(self, job: Job) -> discord.abc.Messageable:
        """The job's thread, else its channel."""
        return await thread_or_channel(self.bot, job.thread_id, job.channel_id, f"job {job.id}")

    # --- status --------------------------------------------------------------------------------------
    async def job_updated(self, job: Job, progress: Progress) -> None:
        if not job.status_message_id:
            return
        self._pending_edit[job.id] = (job, progress)
        wait = self._last_edit.get(job.id, 0.0) + self.edit_interval - time.monotonic()
        if wait <= 0 or job.is_final:
            if job.is_final and (flusher := self._flushers.pop(job.id, None)) is not None:
                flusher.cancel()  # the final state is shown now; a later edit would only repeat it
            await self._flush(job.id)
        elif job.id not in self._flushers or self._flushers[job.id].done():
            self._flushers[job.id] = asyncio.create_task(self._flush_later(job.id, wait))

    async def _flush_later(self, job_id: int, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
            await self._flush(job_id)
        finally:
            if self._flushers.get(job_id) is asyncio.current_task():
                del self._flushers[job_id]  # per-job state ends with its last edit

    async def _flush(self, job_id: int) -> None:
        pending = self._pending_edit.pop(job_id, None)
        if pending is None:
            return
        job, progress = pending
        self._last_edit[job_id] = time.monotonic()
        await self.edit_status(job, progress)

    async def edit_status(self, job: Job, progress: Progress) -> None:
        if not job.status_message_id:
            return
        try:
            channel = await self._channel(job.channel_id)
            message = channel.get_partial_message(job.status_message_id)  # type: ignore[attr-defined]
            await message.edit(
                embed=status_embed(job, progress, self.locale_for(job)),
                view=job_buttons(job, self.locale_for(job), extendable=self.extendable(job)),
                allowed_mentions=NO_PINGS,
            )
        except discord.HTTPException as exc:
            log.info("status edit of job %s failed: %s", job.id, exc.status)
        except NETWORK_ERRORS as exc:
            log.info("status edit of job %s failed (%s); the next update retries", job.id, type(exc).__name__)
        except DeliveryError:
            pass
        if job.is_final:
            self._last_edit.pop(job.id, None)

    # --- results -------------------------------------------------------------------------------------
    async def deliver(self, job: Job, video: Video, *, redelivery: bool) -> None:
        """Post the video (or its link). Every refusal is temporary (`DeliveryError`): an outage ends, a permission
        is granted; the guild's managers and the owners are told once what to fix. Permanent only when the
        job's thread and channel were deleted."""
        locale = self.locale_for(job)
        target: discord.abc.Messageable | None = None
        try:
            target = await self._target(job)
            limit = await upload_limit(self.bot, job.guild_id, self.ready_timeout)
            if redelivery and await self._already_posted(target, job):
                log.info("job %s was already delivered before a restart", job.id)
                return
            try:
                await self._post_video(target, job, video, locale, limit)
            except discord.Forbidden:
                # The thread refuses the bot now (permission taken away mid-job): post in the channel.
                channel = await self._parent_of_thread(job, target)
                if channel is None:
                    raise
                log.info("job %s: no permission in its thread; posting in the channel", job.id)
                target = channel
                if redelivery and await self._already_posted(channel, job):
                    return
                await self._post_video(channel, job, video, locale, limit)
        except DeliveryError:
            raise
        except discord.NotFound as exc:
            # Thread and channel deleted: nowhere left to post (the job fails, not charged).
            await self._tell_blocked_once(job, "gone", None)
            raise DeliveryError(f"channel gone ({exc.code})", permanent=True) from exc
        except discord.Forbidden as exc:
            await self._tell_blocked_once(job, "permission", target)
            raise DeliveryError(f"missing permission ({exc.code})") from exc
        except discord.HTTPException as exc:
            raise DeliveryError(f"discord error {exc.status}/{exc.code}") from exc
        except NETWORK_ERRORS as exc:
            raise DeliveryError(f"network: {type(exc).__name__}") from exc
        self._told_blocked = {told for told in self._told_blocked if told[0] != job.guild_id}

    async def _tell_blocked_once(self, job: Job, problem: str, target: discord.abc.Messageable | None) -> None:
        """Tell the owners and the guild's owner, once per guild and problem until a video goes through again,
        why videos wait and what to do (the permissions to grant)."""
        if (job.guild_id, problem) in self._told_blocked:
            return
        self._told_blocked.add((job.guild_id, problem))
        channel = job.thread_id or job.channel_id
        params = {"guild": job.guild_id, "channel": channel, "job_id": job.id,
                  "permissions": ", ".join(self._missing_permissions(job, target))}  # fmt: skip
        key = f"alert.delivery_{problem}"
        await self.owner_alert(key, **params)
        guild = self.bot.get_guild(job.guild_id)
        manager = guild.owner_id if guild is not None else None
        if manager is None or manager in await self.owners.user_ids():
            return
        try:
            user = await self.bot.fetch_user(manager)
            await user.send(t(self.locale_for(job), key, **params), allowed_mentions=NO_PINGS)
        except BEST_EFFORT_ERRORS as exc:
            log.warning("could not tell the manager of guild %s why its videos wait: %r", job.guild_id, exc)

    def _missing_permissions(self, job: Job, target: discord.abc.Messageable | None) -> list[str]:
        """The permissions a video post needs that the bot lacks at `target`, by their names in Discord's
        settings (all of them when the bot's permissions there are not known or look complete)."""
        in_thread = bool(job.thread_id) and job.thread_id != job.channel_id
        needed = [(attr, name) for attr, name in POST_PERMISSIONS if in_thread or attr != "send_messages_in_threads"]
        guild = getattr(target, "guild", None)
        me = guild.me if guild is not None else None
        if me is None or not isinstance(target, discord.abc.GuildChannel | discord.Thread):
            return [name for _, name in needed]
        allowed = target.permissions_for(me)
        missing = [name for attr, name in needed if not getattr(allowed, attr)]
        return missing or [name for _, name in needed]

    async def _parent_of_thread(self, job: Job, target: discord.abc.Messageable) -> discord.abc.Messageable | None:
        """The job's channel when `target` is the thread opened for it (None otherwise)."""
        if not job.thread_id or job.thread_id == job.channel_id or getattr(target, "id", None) != job.thread_id:
            return None
        return await self._channel(job.channel_id)

    async def _already_posted(self, target: discord.abc.Messageable, job: Job) -> bool:
        marker = MARKER.format(job_id=job.id)
        async for message in target.history(limit=50):
            if message.author.id == self.bot.user.id if self.bot.user else False:
                for embed in message.embeds:
                    # Equal, not contained: job 1's marker is inside job 12's, and variations share a thread.
                    if embed.footer and embed.footer.text == marker:
                        return True
        return False

    def _result_embed(self, job: Job, locale: str) -> discord.Embed:
        embed = discord.Embed(colour=STATE_COLOURS[JobState.DELIVERED])
        if job.actual_prompt and job.actual_prompt != job.request.prompt:
            embed.add_field(name=t(locale, "result.actual_prompt"), value=clip(job.actual_prompt, 1024), inline=False)
        if job.request.seed is not None:
            embed.add_field(name=t(locale, "result.seed"), value=str(job.request.seed), inline=True)
        embed.add_field(name=t(locale, "result.cost"), value=f"¥{format_cny(job.cost_settled)}", inline=True)
        embed.set_footer(text=MARKER.format(job_id=job.id))
        return embed

    async def _post_video(
        self, target: discord.abc.Messageable, job: Job, video: Video, locale: str, limit: int
    ) -> None:
        mention = discord.AllowedMentions(users=[discord.Object(job.user_id)], everyone=False, roles=False)
        embed = self._result_embed(job, locale)
        # No file when the video was over the download cap: only its link can be posted.
        if video.size <= limit and await asyncio.to_thread(Path(video.path).exists):
            try:
                await target.send(
                    t(locale, "result.ready", user=f"<@{job.user_id}>", job_id=job.id),
                    embed=embed,
                    file=discord.File(Path(video.path), filename=f"kf2v-{job.id}.mp4"),
                    allowed_mentions=mention,
                )
                return
            except discord.HTTPException as exc:
                if exc.status != 413 and exc.code != 40005:
                    raise
                log.info("job %s: upload refused as too large; posting the link", job.id)
        if not video.url:
            raise DeliveryError("video larger than the upload limit: its link is needed", needs_link=True)
        expires = int(video.url_expires_at.timestamp()) if video.url_expires_at else int(time.time() + 86400)
        await target.send(
            t(locale, "result.link", user=f"<@{job.user_id}>", job_id=job.id, url=video.url, expires_ts=expires,
              size_mb=f"{video.size / 1048576:.1f}"),
            embed=embed,
            allowed_mentions=mention,
        )  # fmt: skip

    async def job_failed(self, job: Job) -> None:
        locale = self.locale_for(job)
        key = job.error_key or "job.failed.provider"
        if job.state is JobState.CANCELED:
            text = t(locale, "result.cancelled", user=f"<@{job.user_id}>", job_id=job.id)
        else:
            reason = t(locale, key, template=job.request.template or "")
            text = t(locale, "result.failed", user=f"<@{job.user_id}>", job_id=job.id, reason=reason)
        if job.charge_state is ChargeState.RELEASED:
            text += "\n" + t(locale, "result.not_charged")
        mention = discord.AllowedMentions(users=[discord.Object(job.user_id)], everyone=False, roles=False)
        try:
            target = await self._target(job)
            try:
                await target.send(text, allowed_mentions=mention)
            except discord.Forbidden:
                channel = await self._parent_of_thread(job, target)
                if channel is None:
                    raise
                await channel.send(text, allowed_mentions=mention)
        except BEST_EFFORT_ERRORS as exc:
            log.warning("could not tell the thread of job %s about its failure: %r", job.id, exc)
        # Through job_updated, not edit_status: a progress edit still waiting its turn is dropped, else it would
        # put "Generating" back on the status after this final one.
        await self.job_updated(job, Progress())

    async def owner_alert(self, key: str, **params: Any) -> None:
        text = t(None, key, **params)
        log.error("owner alert: %s", text)
        for user_id in sorted(await self.owners.user_ids()):
            try:
                user = await self.bot.fetch_user(user_id)
                await user.send(text, allowed_mentions=NO_PINGS)
            except discord.HTTPException as exc:
                log.warning("could not DM owner %s: %s", user_id, exc.status)
            except NETWORK_ERRORS as exc:
                log.warning("could not DM owner %s: %s", user_id, type(exc).__name__)

    async def close(self) -> None:
        for task in self._flushers.values():
            task.cancel()
        await asyncio.gather(*self._flushers.values(), return_exceptions=True)
