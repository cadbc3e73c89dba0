"""Persistent job buttons (Cancel, Regenerate, Remix, Extend) that survive restarts.

The job id lives in the custom id (`kf2v:cancel:<job_id>`); nothing is kept in memory, so a button on a
message posted before a restart still works. The id is user-controlled input: whoever presses is checked
against the job (requester, a manager of that guild, or an owner) before anything happens.
`render.job_buttons` draws plain buttons with those ids; `JobButtons.items()` gives the classes the client
registers to answer them, each holding the service it calls.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import discord

from bot.discord_ui.channels import thread_locale
from bot.discord_ui.checks import Owners, is_manager, require_post_permissions
from bot.discord_ui.conversation import open_conversation
from bot.discord_ui.errors import reply_error
from bot.discord_ui.extend import ExtendModal, post_in_parent_thread
from bot.discord_ui.modals import RemixModal
from bot.discord_ui.persistent import ButtonItem, id_button, in_allowed_guild
from bot.discord_ui.render import (
    CANCEL_ID,
    DELETE_ID,
    DETAILS_ID,
    EXTEND_ID,
    NO_PINGS,
    REGENERATE_ID,
    REMIX_ID,
    VARY_ID,
    channel_mention,
)
from bot.discord_ui.results import (
    details_message,
    job_cost,
    post_variations,
    remove_result_messages,
    variations_accepted,
)
from bot.errors import InvalidInput, NotAllowed
from bot.i18n import t
from bot.jobs.models import Job, JobState
from bot.jobs.service import Actor, JobService, RemixEdits

log = logging.getLogger(__name__)

VARY_COUNT = 2  # videos one press of Vary asks for (each a full-price job: 2 keeps a press affordable)


class JobButtons:
    """What the buttons do, with the service, owners and allowed guilds they need."""

    def __init__(self, jobs: JobService, owners: Owners, allowed_guilds: Collection[int]) -> None:
        self.jobs = jobs
        self.owners = owners
        self.allowed_guilds = frozenset(allowed_guilds)

    async def allowed(self, interaction: discord.Interaction[Any]) -> bool:
        return await in_allowed_guild(interaction, self.allowed_guilds)

    async def actor_for(self, interaction: discord.Interaction[Any], guild_id: int) -> Actor:
        managing = interaction.guild_id == guild_id and is_manager(interaction)  # a manager of *that* job's guild
        is_owner = await self.owners.is_owner(interaction.user.id)
        return Actor(user_id=interaction.user.id, is_manager=managing, is_owner=is_owner)

    async def cancel(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        locale = str(interaction.locale)
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            job = await self.jobs.get(job_id)
            job = await self.jobs.cancel(job_id, await self.actor_for(interaction, job.guild_id))
            key = "button.cancelled" if job.state is JobState.CANCELED else "button.cancel_requested"
            await interaction.followup.send(t(locale, key, job_id=job.id), ephemeral=True)
        except Exception as exc:
            await reply_error(interaction, exc)

    async def regenerate(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            assert interaction.guild_id is not None and interaction.channel_id is not None  # guild messages only
            require_post_permissions(interaction)
            job = await self.jobs.get(job_id)
            new_job = await self.jobs.regenerate(
                job_id,
                await self.actor_for(interaction, job.guild_id),
                str(interaction.locale),
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
            )
            await open_conversation(interaction, new_job, self.jobs)
        except Exception as exc:
            await reply_error(interaction, exc)

    async def remix(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """Answer with the pre-filled modal: it must be the first response (no deferral), so only a quick
        read of the job and the presser's right to it come first."""
        try:
            job = await self.jobs.get(job_id)
            actor = await self.actor_for(interaction, job.guild_id)
            if not (actor.is_owner or actor.is_manager or actor.user_id == job.user_id):
                raise NotAllowed("job.not_yours")  # the refusal Cancel and Regenerate give
            spec = next((m for m in self.jobs.models() if m.key == job.request.model), None)

            async def submitted(modal_interaction: discord.Interaction[Any], edits: RemixEdits) -> None:
                await self.remix_submitted(modal_interaction, job_id, edits)

            await interaction.response.send_modal(RemixModal(job, spec, str(interaction.locale), submitted))
        except Exception as exc:
            await reply_error(interaction, exc)

    async def remix_submitted(self, interaction: discord.Interaction[Any], job_id: int, edits: RemixEdits) -> None:
        """The same frames with the edits, through every check and the budget; a new conversation (status
        message and thread) where the button was, and a link to it in the old job's thread."""
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            assert interaction.guild_id is not None and interaction.channel_id is not None  # guild messages only
            require_post_permissions(interaction)
            old = await self.jobs.get(job_id)
            new_job = await self.jobs.remix(
                job_id,
                await self.actor_for(interaction, old.guild_id),
                edits,
                str(interaction.locale),
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
            )
            await open_conversation(interaction, new_job, self.jobs)
            await self._link_from(interaction, old, await self.jobs.get(new_job.id))
        except Exception as exc:
            await reply_error(interaction, exc)

    async def _link_from(self, interaction: discord.Interaction[Any], old: Job, new: Job) -> None:
        """Post "remixed as #new" where the old job's conversation is; a failure here costs nothing."""
        where_id = old.thread_id or old.channel_id
        if new.thread_id is None and new.status_message_id is None:
            return
        target = channel_mention(new.thread_id) if new.thread_id else channel_mention(new.channel_id)
        try:
            channel = interaction.client.get_channel(where_id) or await interaction.client.fetch_channel(where_id)
            if isinstance(channel, discord.abc.Messageable):
                text = t(old.locale, "remix.linked", job_id=new.id, old_job_id=old.id, where=target)
                await channel.send(text, allowed_mentions=NO_PINGS)
        except discord.HTTPException as exc:
            log.info("job %s: no link to remix #%s in its thread (%s)", old.id, new.id, exc.status)

    async def extend(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """Answer with the Extend modal (first response: no deferral), after the presser's right to the job and
        whether the video can still be continued."""
        try:
            job = await self.jobs.get(job_id)
            actor = await self.actor_for(interaction, job.guild_id)
            if not (actor.is_owner or actor.is_manager or actor.user_id == job.user_id):
                raise NotAllowed("job.not_yours")
            added = self.jobs.extend_limits(job)
            spec = self.jobs.catalog.models.get(job.request.model)
            if added is None or spec is None:
                raise InvalidInput("input.extend_model", model=job.request.model)

            async def submitted(modal_interaction: discord.Interaction[Any], prompt: str, seconds: int) -> None:
                await self.extend_submitted(modal_interaction, job_id, prompt, seconds)

            locale = str(interaction.locale)
            await interaction.response.send_modal(ExtendModal(job, spec.prompt_max_chars, added, locale, submitted))
        except Exception as exc:
            await reply_error(interaction, exc)

    async def extend_submitted(
        self, interaction: discord.Interaction[Any], job_id: int, prompt: str, seconds: int
    ) -> None:
        """Every check and the budget (price x the new total), then the job is followed in the parent's thread."""
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            assert interaction.guild_id is not None and interaction.channel_id is not None  # guild messages only
            require_post_permissions(interaction)
            parent = await self.jobs.get(job_id)
            new_job = await self.jobs.extend(
                job_id,
                await self.actor_for(interaction, parent.guild_id),
                prompt,
                seconds,
                str(interaction.locale),
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                post_channel_id=parent.thread_id or parent.channel_id,
            )
            await post_in_parent_thread(interaction, parent, new_job, self.jobs)
        except Exception as exc:
            await reply_error(interaction, exc)

    # --- a delivered result (issue 19) ----------------------------------------------------------------
    async def vary(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """VARY_COUNT videos with the job's frames and prompt and new seeds, reserved whole, followed and
        delivered in the result's thread."""
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            assert interaction.guild_id is not None and interaction.channel_id is not None  # guild messages only
            require_post_permissions(interaction)
            job = await self.jobs.get(job_id)
            variations = await self.jobs.vary(
                job_id,
                await self.actor_for(interaction, job.guild_id),
                VARY_COUNT,
                str(interaction.locale),
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                post_channel_id=job.thread_id or job.channel_id,
            )
            await post_variations(interaction, self.jobs, variations, job.thread_id)
            where = channel_mention(job.thread_id or job.channel_id)
            text = variations_accepted(variations, str(interaction.locale), where)
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
        except Exception as exc:
            await reply_error(interaction, exc)

    async def details(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """Every parameter of the job, privately, with the command that asks for it again (any member of the
        job's server: the prompt, model and seed are on its public status message already)."""
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            assert interaction.guild_id is not None
            job = await self.jobs.result_for(job_id, interaction.guild_id)
            spec = self.jobs.catalog.models.get(job.request.model)
            content, embed = details_message(job, spec, str(interaction.locale))
            await interaction.followup.send(content, embed=embed, ephemeral=True, allowed_mentions=NO_PINGS)
        except Exception as exc:
            await reply_error(interaction, exc)

    async def delete(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """Take the video down (the requester, the server's managers, the owners): its post and status message
        go, who did it is recorded; what it cost stays spent, and the presser is told so."""
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            assert interaction.guild_id is not None
            job = await self.jobs.get(job_id)
            actor = await self.actor_for(interaction, job.guild_id)
            deleted = await self.jobs.delete_result(job_id, actor, guild_id=interaction.guild_id)
            thread_language = thread_locale(interaction.client, deleted.guild_id, deleted.locale)
            await remove_result_messages(interaction.client, deleted, thread_language)
            locale = str(interaction.locale)
            text = t(locale, "delete.done", job_id=deleted.id, cost=job_cost(deleted, locale))
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
        except Exception as exc:
            await reply_error(interaction, exc)

    def items(self) -> tuple[type[ButtonItem], ...]:
        """The DynamicItem classes the client registers; each press is handed to this object."""
        return (
            id_button(CANCEL_ID.removesuffix(":{job_id}"), self.cancel, self.allowed),
            id_button(REGENERATE_ID.removesuffix(":{job_id}"), self.regenerate, self.allowed),
            id_button(REMIX_ID.removesuffix(":{job_id}"), self.remix, self.allowed),
            id_button(EXTEND_ID.removesuffix(":{job_id}"), self.extend, self.allowed),
            id_button(VARY_ID.removesuffix(":{job_id}"), self.vary, self.allowed),
            id_button(DETAILS_ID.removesuffix(":{job_id}"), self.details, self.allowed),
            id_button(DELETE_ID.removesuffix(":{job_id}"), self.delete, self.allowed),
        )
