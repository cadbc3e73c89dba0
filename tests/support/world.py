"""An end-to-end world: the Discord emulator, the DashScope emulator and the real bot (discord.py) between."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.app import DiscordApp, Services, build_discord_app
from bot.discord_ui.client import VideoBot, point_discord_at
from bot.jobs.models import Job, JobState
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from sandbox.discord_emu import DiscordEmulator, MessageRecord
from tests.support import corpus
from tests.support.engine import engine_settings
from tests.support.waiting import wait_until

OWNER = 900_001
MANAGER = 900_002
ALICE = 900_010
BOB = 900_011
FAST = {"pending_s": (0.05, 0.2), "running_s": (0.2, 0.5)}


@dataclass
class World:
    tmp: Path
    discord: DiscordEmulator
    dashscope: DashScopeEmulator
    guild: int
    channel: int
    overrides: dict[str, Any]
    services: Services | None = None
    bot: VideoBot | None = None
    runner: asyncio.Task[None] | None = None
    app: DiscordApp | None = None
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def svc(self) -> Services:
        assert self.services is not None
        return self.services

    async def start_bot(self) -> None:
        settings = engine_settings(
            self.tmp / "data",
            self.dashscope.base_url,
            DISCORD_TOKEN=self.discord.bot_token,
            KF2V_DISCORD_API_BASE=self.discord.api_base,
            KF2V_DISCORD_GATEWAY=self.discord.gateway_url,
            **self.overrides,
        )
        point_discord_at(settings.discord_api_base, settings.discord_gateway)
        self.app = await build_discord_app(settings, guild_ready_timeout=0.05, edit_interval=0.2)
        self.services, self.bot = self.app.services, self.app.bot
        self.services.worker.config = __import__("dataclasses").replace(
            self.services.worker.config, delivery_backoff_s=0.05, reconcile_grace_s=1.0
        )
        assert settings.discord_token is not None
        self.runner = asyncio.create_task(self.app.run(settings.discord_token.get_secret_value()))
        await asyncio.wait_for(self.bot.wait_until_ready(), 20)

    async def stop_bot(self) -> None:
        if self.app is not None:
            await self.app.close()
        if self.runner is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.runner, 10)
        self.bot = self.services = self.runner = self.app = None

    async def kf2v(
        self,
        user: int = ALICE,
        prompt: str = "a red square turns blue",
        first: bytes | None = None,
        last: bytes | None = None,
        locale: str = "en-US",
        channel: int | None = None,
        guild: int | None = None,
        **options: Any,
    ) -> Any:
        files = {
            "first_frame": (
                "first.png",
                first if first is not None else corpus.good_png(320, 240, corpus.RED),
                "image/png",
            ),
            "last_frame": (
                "last.png",
                last if last is not None else corpus.good_png(320, 240, corpus.BLUE),
                "image/png",
            ),
        }
        record = await self.discord.run_command(
            guild or self.guild, channel or self.channel, user, "kf2v", {"prompt": prompt, **options},
            attachments=files, locale=locale,
        )  # fmt: skip
        await record.wait_response(5)
        return record

    async def reply(self, record: Any, within: float = 20) -> str:
        """What the user saw privately once the deferral was replaced: content, else the embed's text."""

        def seen() -> str | None:
            original = record.original_message
            if original is not None and original.loading:
                return None
            for message in reversed(record.messages):
                if message.ephemeral and not message.deleted and not message.loading:
                    text = message.content or " ".join(
                        f"{e.get('title', '')} {e.get('description', '')} "
                        + " ".join(f"{f.get('name')} {f.get('value')}" for f in e.get("fields", []))
                        for e in message.embeds
                    )
                    return text or None
            return None

        await wait_until(seen, within=within)
        text = seen()
        assert text is not None
        return text

    def videos(self) -> list[tuple[MessageRecord, Any]]:
        out = []
        for message in self.discord.all_messages():
            for attachment in message.attachments:
                if attachment.filename.endswith(".mp4"):
                    out.append((message, attachment))
        return out

    async def job(self, job_id: int) -> Job:
        job = await self.svc.store.get(job_id)
        assert job is not None
        return job

    async def latest_job(self) -> Job:
        jobs = await self.svc.store.all_jobs()
        assert jobs
        return jobs[-1]


async def make_world(tmp: Path, emulator: EmulatorConfig | None = None, **overrides: Any) -> World:
    discord = DiscordEmulator(owner_id=OWNER)
    await discord.start()
    guild = discord.add_guild("Guild A", locale="en-US")
    channel = discord.add_text_channel(guild, "videos")
    for user, name in ((ALICE, "alice"), (BOB, "bob")):
        discord.add_member(guild, user, name)
    discord.add_member(guild, MANAGER, "manager", manage_guild=True)
    discord.add_member(guild, OWNER, "owner", administrator=True)
    dashscope = DashScopeEmulator(emulator or EmulatorConfig(seed=5, **FAST))  # type: ignore[arg-type]
    await dashscope.start()
    world = World(tmp, discord, dashscope, guild, channel, overrides)
    await world.start_bot()
    return world


async def close_world(world: World) -> None:
    await world.stop_bot()
    await world.dashscope.stop()
    await world.discord.stop()


async def delivered(world: World, job_id: int, within: float = 30) -> None:
    """Wait until the job is DELIVERED (its mp4 posted in its thread); TimeoutError otherwise."""

    async def done() -> bool:
        return (await world.job(job_id)).state is JobState.DELIVERED

    await wait_until(done, within=within)
