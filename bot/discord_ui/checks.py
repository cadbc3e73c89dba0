"""Who may do what: managers, owners, the guild allow-list, and whether a result could be posted here."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import discord

from bot.errors import NotAllowed


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


def outside_allowed_guilds(interaction: discord.Interaction[Any], allowed: Collection[int]) -> NotAllowed | None:
    """The refusal for an interaction from a guild KF2V_ALLOWED_GUILDS leaves out, else None.

    The one rule for every command and button (checked before anything is read, spent or stored). Without
    a guild (a DM) the commands' own guild-only check answers.
    """
    if not allowed or interaction.guild_id is None or interaction.guild_id in allowed:
        return None
    return NotAllowed("guild.not_allowed")


class Owners:
    """KF2V_OWNER_IDS plus the application's owner or team (asked once)."""

    def __init__(self, client: discord.Client, configured: Collection[int]) -> None:
        self.client = client
        self.configured = frozenset(configured)
        self._app_owner_ids: set[int] | None = None

    async def user_ids(self) -> set[int]:
        if self._app_owner_ids is None:
            info = await self.client.application_info()
            ids = {info.owner.id}
            if info.team is not None:
                ids |= {m.id for m in info.team.members}
            self._app_owner_ids = ids
        return self._app_owner_ids | set(self.configured)

    async def is_owner(self, user_id: int) -> bool:
        return user_id in self.configured or user_id in await self.user_ids()
