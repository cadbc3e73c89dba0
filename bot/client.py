"""VideoBot: discord.py wiring, the command tree's one error handler, command sync, persistent buttons."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import BotError, NotAllowed
from bot.i18n import t
from bot.i18n_discord import CatalogTranslator
from bot.views import CancelButton, RegenerateButton

if TYPE_CHECKING:
    from bot.app import Services

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.generate", "cogs.jobs", "cogs.quota", "cogs.admin")
SYNC_HASH_KEY = "command_tree_hash"


class RefusedCheck(app_commands.CheckFailure):
    """A BotError raised from a check: discord.py only routes AppCommandErrors to the tree's handler."""

    def __init__(self, error: BotError) -> None:
        super().__init__(error.key)
        self.error = error


def error_reference() -> str:
    return secrets.token_hex(4)


def user_message(exc: BaseException, locale: str | None) -> tuple[str, str | None]:
    """(text for the user, reference id when it was a bug). Never the raw exception."""
    if isinstance(exc, app_commands.CommandInvokeError | commands.CommandInvokeError):
        exc = exc.original
    if isinstance(exc, RefusedCheck):
        exc = exc.error
    if isinstance(exc, BotError):
        return t(locale, exc.key, **exc.params), None
    if isinstance(exc, app_commands.NoPrivateMessage):
        return t(locale, "error.guild_only"), None
    if isinstance(exc, app_commands.MissingPermissions | app_commands.CheckFailure):
        return t(locale, "error.not_allowed"), None
    if isinstance(exc, app_commands.CommandOnCooldown):
        return t(locale, "error.rate_limited", retry_ts=int(discord.utils.utcnow().timestamp() + exc.retry_after)), None
    ref = error_reference()
    return t(locale, "error.generic", ref=ref), ref


async def reply_error(interaction: discord.Interaction[Any], exc: BaseException) -> None:
    """The one place that turns any error into an ephemeral message (and a log line with a stack for bugs)."""
    text, ref = user_message(exc, str(interaction.locale))
    if ref is not None:
        log.error(
            "unexpected error ref=%s in %s (guild %s, user %s)",
            ref,
            interaction.command.qualified_name if interaction.command else interaction.data,
            interaction.guild_id,
            interaction.user.id,
            exc_info=exc,
            extra={"ref": ref, "guild_id": interaction.guild_id, "user_id": interaction.user.id},
        )
    else:
        log.info("refused %s for user %s: %s", interaction.guild_id, interaction.user.id, getattr(exc, "key", exc))
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())
        else:
            await interaction.response.send_message(
                text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
            )
    except discord.HTTPException:
        log.warning("could not tell user %s about an error (interaction expired?)", interaction.user.id)


def outside_allowed_guilds(interaction: discord.Interaction[Any]) -> NotAllowed | None:
    """The refusal for an interaction from a guild KF2V_ALLOWED_GUILDS leaves out, else None.

    The one rule for every command and button (checked before anything is read, spent or stored). Without
    a guild (a DM) the commands' own guild-only check answers.
    """
    allowed = interaction.client.services.settings.allowed_guilds
    if not allowed or interaction.guild_id is None or interaction.guild_id in allowed:
        return None
    return NotAllowed("guild.not_allowed")


class KF2VTree(app_commands.CommandTree["VideoBot"]):
    async def interaction_check(self, interaction: discord.Interaction[VideoBot], /) -> bool:
        refusal = outside_allowed_guilds(interaction)
        if refusal is None:
            return True
        if interaction.type is discord.InteractionType.autocomplete:
            return False  # nothing to answer an autocomplete with
        raise RefusedCheck(refusal)  # -> on_error -> the user's refusal, in their language

    async def on_error(self, interaction: discord.Interaction[VideoBot], error: app_commands.AppCommandError) -> None:
        await reply_error(interaction, error)


class VideoBot(commands.Bot):
    def __init__(self, services: Services, *, guild_ready_timeout: float = 2.0) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # guild cache: locale, boost tier (upload limit), channels; nothing privileged
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            tree_cls=KF2VTree,
            allowed_mentions=discord.AllowedMentions.none(),  # prompts are user text: never ping @everyone
            guild_ready_timeout=guild_ready_timeout,
        )
        self.services = services
        self._app_owner_ids: set[int] | None = None

    async def setup_hook(self) -> None:
        await self.tree.set_translator(CatalogTranslator())
        # Buttons carry the job id in their custom id: registering the classes makes every button posted
        # before a restart work again without keeping views in memory.
        self.add_dynamic_items(CancelButton, RegenerateButton)
        for name in EXTENSIONS:
            await self.load_extension(name)
        await self.sync_commands_if_changed()
        await self.services.start(self)

    async def close(self) -> None:
        await self.services.stop()
        await super().close()

    # --- owners --------------------------------------------------------------------------------------
    async def owner_user_ids(self) -> set[int]:
        """KF2V_OWNER_IDS, plus the application's owner or its team (always)."""
        if self._app_owner_ids is None:
            info = await self.application_info()
            ids = {info.owner.id}
            if info.team is not None:
                ids |= {m.id for m in info.team.members}
            self._app_owner_ids = ids
        return self._app_owner_ids | set(self.services.settings.owner_ids)

    async def is_bot_owner(self, user_id: int) -> bool:
        if user_id in self.services.settings.owner_ids:
            return True
        return user_id in await self.owner_user_ids()

    async def require_owner(self, user_id: int) -> None:
        if not await self.is_bot_owner(user_id):
            raise RefusedCheck(NotAllowed("admin.owner_only"))

    # --- command sync --------------------------------------------------------------------------------
    async def command_payload(self, guild: discord.abc.Snowflake | None = None) -> list[dict[str, Any]]:
        translator = self.tree.translator
        commands_ = self.tree.get_commands(guild=guild)
        if translator is None:
            return [c.to_dict(self.tree) for c in commands_]
        return [await c.get_translated_payload(self.tree, translator) for c in commands_]

    async def sync_commands_if_changed(self) -> bool:
        """Sync only when the tree differs from the last sync (Discord rate-limits syncs)."""
        dev_guild_id = self.services.settings.dev_guild_id
        target = discord.Object(id=dev_guild_id) if dev_guild_id else None
        if target is not None:
            self.tree.copy_global_to(guild=target)
        payload = await self.command_payload(target)
        digest = hashlib.sha256(
            json.dumps({"guild": dev_guild_id, "commands": payload}, sort_keys=True, default=str).encode()
        ).hexdigest()
        store = self.services.store
        if await store.get_meta(SYNC_HASH_KEY) == digest:
            log.info("command tree unchanged; not syncing")
            return False
        await self.tree.sync(guild=target)
        await store.set_meta(SYNC_HASH_KEY, digest)
        log.info("command tree synced (%s)", f"guild {dev_guild_id}" if dev_guild_id else "global")
        return True
