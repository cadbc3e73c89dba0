"""A dispatcher frozen past its lease (a GC pause, a stopped VM: here SIGSTOP) while a standby takes over: once
it runs again it must not go on as a second dispatcher, but stop and exit with code 75 (EX_TEMPFAIL), which
systemd's Restart=on-failure and Compose's restart policy turn into a restart as a standby. Two real
`kf2v-bot run` processes on one PostgreSQL database, both emulators."""

from __future__ import annotations

import signal
from pathlib import Path

import asyncpg
import pytest

from bot.app import EXIT_LEASE_LOST
from bot.jobs.worker.lease import DEFAULT_RETRY_S, DEFAULT_TTL_S
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support.waiting import wait_until


async def holder_pid(url: str) -> int | None:
    """The pid of the live holder of every dispatcher lease (holder names are host:pid:nonce)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT holder FROM kf2v_leases WHERE expires_at > clock_timestamp()")
    except asyncpg.UndefinedTableError:  # no process has started yet
        return None
    finally:
        await conn.close()
    holders = {row["holder"] for row in rows}
    return int(holders.pop().split(":")[1]) if len(holders) == 1 else None


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_holder_frozen_past_its_lease_exits_75_once_it_runs_again(tmp_path: Path, postgres_url: str) -> None:
    from sandbox.discord_emu import DiscordEmulator
    from tests.support.reliability import FAKE_API_KEY, FAKE_BOT_TOKEN, OWNER, bot_env, spawn_bot, stop_process

    discord = DiscordEmulator(owner_id=OWNER, bot_token=FAKE_BOT_TOKEN)
    await discord.start()
    guild = discord.add_guild("Guild")
    discord.add_text_channel(guild, "videos")
    dashscope = DashScopeEmulator(EmulatorConfig(api_key=FAKE_API_KEY, seed=75))
    await dashscope.start()
    env = bot_env(discord, dashscope, tmp_path / "data", KF2V_DATABASE_URL=postgres_url)
    logs = tmp_path / "bot.log"
    procs = []
    try:
        first = await spawn_bot(env, logs, tmp_path)
        procs.append(first)
        await wait_until(lambda: _is_holder(postgres_url, first.pid), within=60, interval=0.2)
        second = await spawn_bot(env, logs, tmp_path)
        procs.append(second)
        await wait_until(lambda: _ready_sessions(discord) == 2, within=60, interval=0.2)

        first.send_signal(signal.SIGSTOP)
        # Frozen past its lease (TTL + a retry): the standby takes every lease over.
        await wait_until(lambda: _is_holder(postgres_url, second.pid), within=DEFAULT_TTL_S + DEFAULT_RETRY_S + 30)
        first.send_signal(signal.SIGCONT)

        code = await stop_process(first, signal.SIGCONT, within=30)  # SIGCONT again: only waits for its exit
        assert code == EXIT_LEASE_LOST == 75, logs.read_text(errors="replace")[-3000:]
        assert second.returncode is None, "the new holder goes on"
        assert await holder_pid(postgres_url) == second.pid
        assert await stop_process(second, signal.SIGTERM, within=20) == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await dashscope.stop()
        await discord.stop()


async def _is_holder(url: str, pid: int) -> bool:
    return await holder_pid(url) == pid


def _ready_sessions(discord: object) -> int:
    sessions = discord.gateway.sessions.values()  # type: ignore[attr-defined]
    return sum(1 for s in sessions if s.ready and s.conn is not None and not s.dead)
