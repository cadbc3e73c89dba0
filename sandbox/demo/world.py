"""The demo's world: both emulators on loopback and the real bot (build_services + VideoBot) between them.

Settings are built from the defaults plus the emulators' addresses only: nothing is read from `.env` or
the environment, so a developer's real token or key can never reach the demo (and no credentials are
needed). The provider runs `time_scale` times faster than real; the bot's poll intervals shrink with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.app import DiscordApp, Services, build_discord_app
from bot.discord_ui.client import VideoBot, point_discord_at
from bot.settings import Settings, load_settings
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from sandbox.demo.script import FAIL_WORD, GUILDS, OWNER_ID, OWNER_NAME
from sandbox.discord_emu import DiscordEmulator

log = logging.getLogger(__name__)

SANDBOX_API_KEY = "sk-sandbox-demo-not-a-real-key"  # the emulator accepts any key
READY_TIMEOUT_S = 30.0


@dataclass
class GuildHandle:
    key: str
    guild_id: int
    channel_id: int


@dataclass
class DemoWorld:
    discord: DiscordEmulator
    dashscope: DashScopeEmulator
    settings: Settings
    services: Services
    bot: VideoBot
    runner: asyncio.Task[None]
    guilds: dict[str, GuildHandle] = field(default_factory=dict)
    _saved_endpoints: tuple[Any, Any] | None = None
    app: DiscordApp | None = None

    @property
    def account(self) -> str:
        from sandbox.dashscope_emulator import fingerprint

        return fingerprint(SANDBOX_API_KEY)


def demo_settings(
    data_dir: Path, *, discord_token: str, discord_api: str, discord_gateway: str, dashscope_url: str, time_scale: float
) -> Settings:
    """Every setting at its default (never from `.env` or the environment), pointed at the emulators."""
    values: dict[str, Any] = {"_env_file": None}
    for name, info in Settings.model_fields.items():
        values[info.alias or name] = info.get_default(call_default_factory=True)
    values.update(
        {
            "DISCORD_TOKEN": discord_token,
            "DASHSCOPE_API_KEY": SANDBOX_API_KEY,
            "DASHSCOPE_BASE_URL": dashscope_url,
            "KF2V_DISCORD_API_BASE": discord_api,
            "KF2V_DISCORD_GATEWAY": discord_gateway,
            "KF2V_DATA_DIR": data_dir,
            "KF2V_OWNER_IDS": [OWNER_ID],
            # The provider's minutes become seconds; the bot polls on the same compressed clock.
            "KF2V_POLL_MIN_INTERVAL": 1.0 / time_scale,
            "KF2V_POLL_MAX_INTERVAL": 30.0 / time_scale,
        }
    )
    return load_settings(**values)


def scale_engine_clock(services: Services, time_scale: float) -> None:
    """The worker's provider-time guesses, compressed like the provider: how closely it polls near a task's
    expected end, and the durations it assumes before it has seen any (they drive positions' ETAs)."""
    worker = services.worker
    worker.config = replace(worker.config, detection_target_s=worker.config.detection_target_s / time_scale)
    scheduler = services.scheduler
    scheduler.priors = scheduler.priors.compressed(time_scale)
    scheduler.durations.clear()  # tiers made before this start again from the compressed priors


def _populate(discord: DiscordEmulator) -> dict[str, GuildHandle]:
    handles = {}
    for spec in GUILDS:
        guild_id = discord.add_guild(spec.name, locale=spec.locale)
        channel_id = discord.add_text_channel(guild_id, spec.channel)
        discord.add_member(guild_id, OWNER_ID, OWNER_NAME, administrator=True)
        for member in spec.members:
            discord.add_member(guild_id, member.user_id, member.name)
        handles[spec.key] = GuildHandle(spec.key, guild_id, channel_id)
    return handles


async def start_world(data_dir: Path, time_scale: float, seed: int) -> DemoWorld:
    """Both emulators on 127.0.0.1 (ephemeral ports), the guilds, then the bot until it is ready."""
    import discord.gateway
    import discord.http

    saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    discord_emu = DiscordEmulator(owner_id=OWNER_ID)
    dashscope = DashScopeEmulator(EmulatorConfig.realistic(time_scale=time_scale, seed=seed, fail_word=FAIL_WORD))
    await discord_emu.start("127.0.0.1", 0)
    try:
        await dashscope.start("127.0.0.1", 0)
        handles = _populate(discord_emu)
        settings = demo_settings(
            data_dir,
            discord_token=discord_emu.bot_token,
            discord_api=discord_emu.api_base,
            discord_gateway=discord_emu.gateway_url,
            dashscope_url=dashscope.base_url,
            time_scale=time_scale,
        )
        point_discord_at(settings.discord_api_base, settings.discord_gateway)
        app = await build_discord_app(settings)
        services, bot = app.services, app.bot
        scale_engine_clock(services, time_scale)
        assert settings.discord_token is not None
        runner = asyncio.create_task(app.run(settings.discord_token.get_secret_value()), name="demo-bot")
    except BaseException:
        await dashscope.stop()
        await discord_emu.stop()
        _restore(saved)
        raise
    world = DemoWorld(discord_emu, dashscope, settings, services, bot, runner, handles, saved, app)
    try:
        ready = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait({ready, runner}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            if runner in done and runner.exception() is not None:
                raise RuntimeError(f"the bot stopped while starting: {runner.exception()!r}")
            raise RuntimeError(f"the bot was not ready within {READY_TIMEOUT_S:.0f} s")
    except BaseException:
        await stop_world(world)
        raise
    return world


async def stop_world(world: DemoWorld) -> None:
    """Close the bot (it stops its worker and database), then the emulators; restore discord.py's URLs."""
    try:
        if world.app is not None:
            await world.app.close()
        elif not world.bot.is_closed():
            await world.bot.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(world.runner, 10)
    finally:
        await world.dashscope.stop()
        await world.discord.stop()
        if world._saved_endpoints is not None:
            _restore(world._saved_endpoints)


def _restore(saved: tuple[Any, Any]) -> None:
    import discord.gateway
    import discord.http

    discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved
