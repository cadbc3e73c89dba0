"""Shared plumbing of the reliability and security campaigns (tests/test_reliability_*.py, test_security.py).

Distinctive fake credentials (shaped so that the log redactor's generic patterns do NOT recognise them:
only the registration of the configured secrets can keep them out of the logs), a way to look for them
in everything the bot wrote or posted, and a World whose emulators insist on those credentials.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bot.jobs.models import JobState
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from sandbox.discord_emu import DiscordEmulator
from sandbox.discord_emu.model import DEFAULT_BOT_PERMISSIONS
from tests.support.world import ALICE, BOB, FAST, MANAGER, OWNER, World

ROOT = Path(__file__).resolve().parents[2]
# Not "sk-" + 16 alphanumerics and not a Discord token shape: the redactor's patterns would miss both.
FAKE_API_KEY = "sk-canary_KF2V_api_key_7f3e9a1c"
FAKE_BOT_TOKEN = "canary-bot-token_KF2V.reliability.5b2d8e0f"
SECRETS = {"api_key": FAKE_API_KEY, "bot_token": FAKE_BOT_TOKEN}


def secret_forms() -> dict[str, list[bytes]]:
    """Each secret as raw text and base64 (a leak through an encoded header or blob counts too)."""
    return {
        name: [value.encode(), base64.b64encode(value.encode()), base64.urlsafe_b64encode(value.encode())]
        for name, value in SECRETS.items()
    }


def find_secrets(blobs: Iterable[tuple[str, bytes]]) -> list[str]:
    """Where any secret shows up: ['<where>: <secret name>', ...]."""
    forms = secret_forms()
    found = []
    for where, blob in blobs:
        for name, variants in forms.items():
            if any(v in blob for v in variants):
                found.append(f"{where}: {name}")
    return found


def files_under(folder: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield str(path), path.read_bytes()


def discord_blobs(discord: DiscordEmulator) -> Iterator[tuple[str, bytes]]:
    """Everything the emulated Discord recorded from the bot: messages (all edits, deleted ones too), embeds,
    components, attachments, thread and channel names, synced commands and request paths."""
    for message in discord.all_messages(include_deleted=True):
        where = f"message {message.id}"
        yield where, repr((message.content, message.embeds, message.components, message.history)).encode()
        for attachment in message.attachments:
            yield f"{where} attachment {attachment.filename}", attachment.data + attachment.filename.encode()
    for channel in discord.channels.values():
        yield f"channel {channel.id}", channel.name.encode()
    yield "command syncs", repr([s.__dict__ for s in discord.syncs]).encode()
    yield "request paths", "\n".join(r.path for r in discord.requests).encode()


def videos_per_job(discord: DiscordEmulator) -> Counter[int]:
    """How many times each job's mp4 (or its link) was posted, from the emulator's record."""
    posts: Counter[int] = Counter()
    for message in discord.all_messages(include_deleted=True):
        for attachment in message.attachments:
            if attachment.filename.startswith("kf2v-") and attachment.filename.endswith(".mp4"):
                posts[int(attachment.filename[5:-4])] += 1
        for embed in message.embeds:
            footer = str((embed.get("footer") or {}).get("text") or "")
            if footer.startswith("kf2v-job-") and not message.attachments:
                posts[int(footer.removeprefix("kf2v-job-"))] += 1  # the link fallback
    return posts


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def make_secret_world(
    tmp: Path,
    emulator: EmulatorConfig | None = None,
    *,
    guilds: int = 1,
    bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
    **overrides: Any,
) -> World:
    """tests.support.world.make_world with the fake credentials enforced by both emulators (and more guilds)."""
    discord = DiscordEmulator(owner_id=OWNER, bot_token=FAKE_BOT_TOKEN)
    await discord.start()
    first_guild = first_channel = 0
    extra: dict[str, int] = {}
    for n in range(guilds):
        guild = discord.add_guild(f"Guild {n}", locale="en-US", bot_permissions=bot_permissions)
        channel = discord.add_text_channel(guild, "videos")
        for user, name in ((ALICE, "alice"), (BOB, "bob")):
            discord.add_member(guild, user, name)
        discord.add_member(guild, MANAGER, "manager", manage_guild=True)
        discord.add_member(guild, OWNER, "owner", administrator=True)
        if n == 0:
            first_guild, first_channel = guild, channel
        extra[f"guild{n}"], extra[f"channel{n}"] = guild, channel
    config = emulator or EmulatorConfig(seed=5, **FAST)  # type: ignore[arg-type]
    config.api_key = FAKE_API_KEY
    dashscope = DashScopeEmulator(config)
    await dashscope.start()
    world = World(tmp, discord, dashscope, first_guild, first_channel, {"DASHSCOPE_API_KEY": FAKE_API_KEY, **overrides})
    world.extra.update(extra)
    await world.start_bot()
    return world


def bot_env(discord: DiscordEmulator, dashscope: DashScopeEmulator, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for `python -m bot run` against the two emulators (nothing inherited but PATH-like basics)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")}
    return {
        **keep,
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": FAKE_BOT_TOKEN,
        "DASHSCOPE_API_KEY": FAKE_API_KEY,
        "DASHSCOPE_BASE_URL": dashscope.base_url,
        "KF2V_DISCORD_API_BASE": discord.api_base,
        "KF2V_DISCORD_GATEWAY": discord.gateway_url,
        "KF2V_DATA_DIR": str(data_dir),
        "KF2V_OWNER_IDS": str(OWNER),
        "KF2V_POLL_MIN_INTERVAL": "0.1",
        "KF2V_POLL_MAX_INTERVAL": "0.5",
        "KF2V_USER_COMMANDS_PER_MINUTE": "100",
        "KF2V_DEFAULT_USER_QUEUE_LIMIT": "50",
        "KF2V_DEFAULT_MEMBER_DAILY_VIDEOS": "100",
        "KF2V_DEFAULT_DAILY_BUDGET": "100",
        **extra,
    }


async def spawn_bot(env: dict[str, str], log: Path, cwd: Path) -> asyncio.subprocess.Process:
    """`python -m bot run`, its stderr (the logs) appended to `log`."""
    with log.open("ab") as handle:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=cwd, env=env, stdout=handle, stderr=handle
        )


async def stop_process(proc: asyncio.subprocess.Process, sig: int, within: float = 15) -> int:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        return await asyncio.wait_for(proc.wait(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise


FINAL = (JobState.DELIVERED, JobState.FAILED, JobState.CANCELED)

__all__ = ["ALICE", "BOB", "FINAL", "MANAGER", "OWNER", "SECRETS", "World"]
