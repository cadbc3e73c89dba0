"""VideoBot: discord.py's client for this bot, the command tree (allowed guilds, one error handler) and sync.

It holds no services: bot/app.py builds it first, then the notifier and the services around it, then adds
the cogs (each built with the service it calls) and the job buttons.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Collection, Coroutine, Sequence
from typing import Any, Protocol

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands
from discord.ext import commands

from bot.discord_ui.buttons import JobButtons
from bot.discord_ui.checks import outside_allowed_guilds
from bot.discord_ui.errors import RefusedCheck, reply_error
from bot.discord_ui.translator import CatalogTranslator

log = logging.getLogger(__name__)

SYNC_HASH_KEY = "command_tree_hash"


class MetaStore(Protocol):
    """Where the last synced command tree's hash is kept (the job store's meta table)."""

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str) -> None: ...


class KF2VTree(app_commands.CommandTree["VideoBot"]):
    async def interaction_check(self, interaction: discord.Interaction[VideoBot], /) -> bool:
        refusal = outside_allowed_guilds(interaction, self.client.allowed_guilds)
        if refusal is None:
            return True
        if interaction.type is discord.InteractionType.autocomplete:
            return False  # nothing to answer an autocomplete with
        raise RefusedCheck(refusal)  # -> on_error -> the user's refusal, in their language

    async def on_error(self, interaction: discord.Interaction[VideoBot], error: app_commands.AppCommandError) -> None:
        await reply_error(interaction, error)


class VideoBot(commands.AutoShardedBot):
    """Sharded as discord.py's AutoShardedBot: by default one process with every shard Discord recommends;
    scaled out, each process runs `shard_ids` of `shard_count` (KF2V_SHARD_IDS / KF2V_SHARD_COUNT)."""

    def __init__(
        self,
        meta: MetaStore,
        *,
        allowed_guilds: Collection[int] = (),
        dev_guild_id: int | None = None,
        guild_ready_timeout: float = 2.0,
        shard_count: int | None = None,
        shard_ids: Sequence[int] = (),
    ) -> None:
        # Unset: discord.py asks Discord how many shards and runs them all here. A count without ids: all of them.
        sharding: dict[str, Any] = {}
        if shard_count is not None:
            sharding = {"shard_count": shard_count, "shard_ids": list(shard_ids) or list(range(shard_count))}
        intents = discord.Intents.none()
        intents.guilds = True  # guild cache: locale, boost tier (upload limit), channels; nothing privileged
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            tree_cls=KF2VTree,
            # Every command bills a guild's budget and posts in its channels: offered in guilds where the bot is
            # installed only, even if "User Install" is switched on in the developer portal (issue 19).
            allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
            allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=False, private_channel=False),
            allowed_mentions=discord.AllowedMentions.none(),  # prompts are user text: never ping @everyone
            guild_ready_timeout=guild_ready_timeout,
            **sharding,
        )
        self.meta = meta
        self.allowed_guilds = frozenset(allowed_guilds)
        self.dev_guild_id = dev_guild_id

    def add_job_buttons(self, buttons: JobButtons) -> None:
        # Buttons carry the job id in their custom id: registering the classes makes every button posted
        # before a restart work again without keeping views in memory.
        self.add_dynamic_items(*buttons.items())

    async def setup_hook(self) -> None:
        await self.tree.set_translator(CatalogTranslator())
        await self.sync_commands_if_changed()

    # --- command sync --------------------------------------------------------------------------------
    async def command_payload(self, guild: discord.abc.Snowflake | None = None) -> list[dict[str, Any]]:
        translator = self.tree.translator
        commands_ = self.tree.get_commands(guild=guild)
        if translator is None:
            return [c.to_dict(self.tree) for c in commands_]
        return [await c.get_translated_payload(self.tree, translator) for c in commands_]

    async def sync_commands_if_changed(self) -> bool:
        """Sync only when the tree differs from the last sync (Discord rate-limits syncs)."""
        dev_guild_id = self.dev_guild_id
        target = discord.Object(id=dev_guild_id) if dev_guild_id else None
        if target is not None:
            self.tree.copy_global_to(guild=target)
        payload = await self.command_payload(target)
        digest = hashlib.sha256(
            json.dumps({"guild": dev_guild_id, "commands": payload}, sort_keys=True, default=str).encode()
        ).hexdigest()
        if await self.meta.get_meta(SYNC_HASH_KEY) == digest:
            log.info("command tree unchanged; not syncing")
            return False
        await self.tree.sync(guild=target)
        await self.meta.set_meta(SYNC_HASH_KEY, digest)
        log.info("command tree synced (%s)", f"guild {dev_guild_id}" if dev_guild_id else "global")
        return True


class StartupRefused(Exception):
    """Discord refused to let the bot start: `line` is what the operator reads, `exit_code` what `run` returns."""

    def __init__(self, line: str, exit_code: int) -> None:
        super().__init__(line)
        self.line = line
        self.exit_code = exit_code


class _NoVoiceNoise(logging.Filter):
    """discord.py warns at start-up that voice libraries are missing; this bot never uses voice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in record.getMessage()


def point_discord_at(api_base: str, gateway: str) -> None:
    """discord.py keeps its endpoints in class attributes; tests and the demo aim them at an emulator."""
    discord.http.Route.BASE = api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
    logging.getLogger("discord.client").addFilter(_NoVoiceNoise())


async def serve_until(running: Coroutine[Any, Any, None], stop: asyncio.Event, *, api_base: str) -> None:
    """Run the client until `stop` is set; Discord's start-up refusals become `StartupRefused`."""
    runner = asyncio.create_task(running)
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()  # raise what ended it
    except discord.LoginFailure:
        raise StartupRefused(
            "Discord rejected DISCORD_TOKEN: check the token in .env (Bot -> Reset Token).", exit_code=2
        ) from None
    except discord.PrivilegedIntentsRequired:
        raise StartupRefused("Discord refused the gateway intents.", exit_code=2) from None
    except (aiohttp.ClientError, OSError, discord.GatewayNotFound) as exc:
        log.error("cannot reach Discord", exc_info=exc)  # the operator's stack trace, in the log
        raise StartupRefused(
            f"cannot reach Discord at {api_base} ({type(exc).__name__}); "
            "check the network and KF2V_DISCORD_API_BASE, then start again.",
            exit_code=1,
        ) from None
    finally:
        for task in (runner, stopper):
            task.cancel()
        await asyncio.gather(runner, stopper, return_exceptions=True)
