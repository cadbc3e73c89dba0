"""Persistent job buttons (Cancel, Regenerate) that survive restarts.

The job id lives in the custom id (`kf2v:cancel:<job_id>`); nothing is kept in memory, so a button on a
message posted before a restart still works. The id is user-controlled input: whoever presses is checked
against the job (requester, a manager of that guild, or an owner) before anything happens.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bot.errors import NotAllowed
from bot.i18n import t
from bot.jobs.models import Job, JobState
from bot.jobs.service import Actor

if TYPE_CHECKING:
    from bot.client import VideoBot

CANCELLABLE = frozenset({JobState.QUEUED, JobState.SUBMITTING, JobState.PENDING})


def is_manager(interaction: discord.Interaction[Any]) -> bool:
    """Manage Server (or Administrator) in the guild the interaction came from, checked at run time."""
    member = interaction.user
    return isinstance(member, discord.Member) and (
        member.guild_permissions.manage_guild or member.guild_permissions.administrator
    )


def require_post_permissions(interaction: discord.Interaction[Any]) -> None:
    """Refuse before spending money when the result could not be posted here (/kf2v and Regenerate)."""
    perms = interaction.app_permissions
    in_thread = isinstance(interaction.channel, discord.Thread)
    can_send = perms.send_messages_in_threads if in_thread else perms.send_messages
    if not (can_send and perms.attach_files and perms.embed_links):
        raise NotAllowed("submit.cannot_post")


async def actor_for(interaction: discord.Interaction[Any], guild_id: int) -> Actor:
    bot: VideoBot = interaction.client
    managing = interaction.guild_id == guild_id and is_manager(interaction)  # a manager of *that* job's guild
    return Actor(user_id=interaction.user.id, is_manager=managing, is_owner=await bot.is_bot_owner(interaction.user.id))


class AllowedGuildsOnly:
    """Mixed into every job button: the guild allow-list, checked before its callback runs."""

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        from bot.client import outside_allowed_guilds, reply_error

        refusal = outside_allowed_guilds(interaction)
        if refusal is None:
            return True
        await reply_error(interaction, refusal)
        return False


class CancelButton(
    AllowedGuildsOnly, discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"kf2v:cancel:(?P<job_id>[0-9]{1,18})"
):
    def __init__(self, job_id: int, label: str = "Cancel") -> None:
        super().__init__(
            discord.ui.Button(label=label, style=discord.ButtonStyle.danger, custom_id=f"kf2v:cancel:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> CancelButton:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bot.client import reply_error

        bot: VideoBot = interaction.client
        locale = str(interaction.locale)
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            job = await bot.services.jobs.get(self.job_id)
            actor = await actor_for(interaction, job.guild_id)
            job = await bot.services.jobs.cancel(self.job_id, actor)
            key = "button.cancelled" if job.state is JobState.CANCELED else "button.cancel_requested"
            await interaction.followup.send(t(locale, key, job_id=job.id), ephemeral=True)
        except Exception as exc:
            await reply_error(interaction, exc)


class RegenerateButton(
    AllowedGuildsOnly, discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"kf2v:regen:(?P<job_id>[0-9]{1,18})"
):
    def __init__(self, job_id: int, label: str = "Regenerate") -> None:
        super().__init__(
            discord.ui.Button(label=label, style=discord.ButtonStyle.secondary, custom_id=f"kf2v:regen:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> RegenerateButton:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bot.client import reply_error
        from bot.conversation import open_conversation

        bot: VideoBot = interaction.client
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            assert interaction.guild_id is not None and interaction.channel_id is not None  # guild messages only
            require_post_permissions(interaction)
            job = await bot.services.jobs.get(self.job_id)
            actor = await actor_for(interaction, job.guild_id)
            new_job = await bot.services.jobs.regenerate(
                self.job_id,
                actor,
                str(interaction.locale),
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
            )
            await open_conversation(interaction, new_job)
        except Exception as exc:
            await reply_error(interaction, exc)


def job_buttons(job: Job, locale: str | None) -> discord.ui.View:
    """Cancel while it can still be stopped; Regenerate once it is over."""
    view = discord.ui.View(timeout=None)
    if job.state in CANCELLABLE and not job.cancel_requested:
        view.add_item(CancelButton(job.id, t(locale, "button.cancel")))
    if job.state in (JobState.DELIVERED, JobState.FAILED, JobState.CANCELED):
        view.add_item(RegenerateButton(job.id, t(locale, "button.regenerate")))
    return view
