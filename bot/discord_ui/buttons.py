"""Persistent job buttons (Cancel, Regenerate) that survive restarts.

The job id lives in the custom id (`kf2v:cancel:<job_id>`); nothing is kept in memory, so a button on a
message posted before a restart still works. The id is user-controlled input: whoever presses is checked
against the job (requester, a manager of that guild, or an owner) before anything happens.
`render.job_buttons` draws plain buttons with those ids; `JobButtons.items()` gives the classes the client
registers to answer them, each holding the service it calls.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import discord

from bot.discord_ui.checks import Owners, is_manager, outside_allowed_guilds, require_post_permissions
from bot.discord_ui.conversation import open_conversation
from bot.discord_ui.errors import reply_error
from bot.discord_ui.render import CANCEL_ID, REGENERATE_ID
from bot.i18n import t
from bot.jobs.models import JobState
from bot.jobs.service import Actor, JobService

ButtonItem = discord.ui.DynamicItem[discord.ui.Button[Any]]


class JobButtons:
    """What the buttons do, with the service, owners and allowed guilds they need."""

    def __init__(self, jobs: JobService, owners: Owners, allowed_guilds: Collection[int]) -> None:
        self.jobs = jobs
        self.owners = owners
        self.allowed_guilds = frozenset(allowed_guilds)

    async def allowed(self, interaction: discord.Interaction[Any]) -> bool:
        refusal = outside_allowed_guilds(interaction, self.allowed_guilds)
        if refusal is None:
            return True
        await reply_error(interaction, refusal)
        return False

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

    def items(self) -> tuple[type[ButtonItem], type[ButtonItem]]:
        """The DynamicItem classes the client registers; each press is handed to this object."""
        handler = self

        class CancelButton(ButtonItem, template=r"kf2v:cancel:(?P<job_id>[0-9]{1,18})"):
            def __init__(self, job_id: int) -> None:
                super().__init__(discord.ui.Button(custom_id=CANCEL_ID.format(job_id=job_id)))
                self.job_id = job_id

            @classmethod
            async def from_custom_id(
                cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
            ) -> CancelButton:
                return cls(int(match["job_id"]))

            async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
                return await handler.allowed(interaction)

            async def callback(self, interaction: discord.Interaction[Any]) -> None:
                await handler.cancel(interaction, self.job_id)

        class RegenerateButton(ButtonItem, template=r"kf2v:regen:(?P<job_id>[0-9]{1,18})"):
            def __init__(self, job_id: int) -> None:
                super().__init__(discord.ui.Button(custom_id=REGENERATE_ID.format(job_id=job_id)))
                self.job_id = job_id

            @classmethod
            async def from_custom_id(
                cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
            ) -> RegenerateButton:
                return cls(int(match["job_id"]))

            async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
                return await handler.allowed(interaction)

            async def callback(self, interaction: discord.Interaction[Any]) -> None:
                await handler.regenerate(interaction, self.job_id)

        return CancelButton, RegenerateButton
