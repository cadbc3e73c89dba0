"""A story survives SIGKILLs of the real bot (`python -m bot run` against both emulators in this process).

The bot is killed while the story's segments run (once a segment is at the provider, once a segment is on
disk), restarted on the same data dir each time, and left to finish: the story is posted exactly once, no
segment task is submitted twice, and every segment's money is settled exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.jobs.models import ChargeState, JobState
from bot.jobs.store import JobStore
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from sandbox.discord_emu import DiscordEmulator
from tests.support import corpus
from tests.support.ledger_check import billed_by_task, check_ledger
from tests.support.reliability import ALICE, FAKE_API_KEY, FAKE_BOT_TOKEN, OWNER, bot_env, spawn_bot, stop_process
from tests.support.waiting import wait_until

KEYFRAMES = [(220, 30, 30), (30, 200, 40), (30, 40, 210), (235, 235, 235)]


def db_count(db_path: Path, sql: str) -> int:
    if not db_path.exists():
        return 0
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = con.execute(sql).fetchone()
        return int(row[0] or 0) if row else 0
    except sqlite3.OperationalError:  # not migrated yet
        return 0
    finally:
        con.close()


def story_posts(discord: DiscordEmulator) -> int:
    return sum(
        1
        for message in discord.all_messages(include_deleted=True)
        for attachment in message.attachments
        if attachment.filename == "story-1.mp4"
    )


@pytest.mark.slow
@pytest.mark.timeout(170)
async def test_a_story_killed_while_its_segments_run_is_delivered_once_and_never_pays_twice(tmp_path: Path) -> None:
    discord = DiscordEmulator(owner_id=OWNER, bot_token=FAKE_BOT_TOKEN)
    await discord.start()
    guild = discord.add_guild("Guild")
    channel = discord.add_text_channel(guild, "videos")
    discord.add_member(guild, ALICE, "alice")
    # Slow enough that the kills land while segments are at the provider.
    dashscope = DashScopeEmulator(
        EmulatorConfig(api_key=FAKE_API_KEY, seed=9, pending_s=(0.5, 1.0), running_s=(1.5, 2.5))
    )
    await dashscope.start()
    data_dir = tmp_path / "data"
    db_path = data_dir / "kf2v.sqlite3"
    logs = tmp_path / "bot.log"
    env = bot_env(discord, dashscope, data_dir)
    proc: asyncio.subprocess.Process | None = None

    async def start() -> asyncio.subprocess.Process:
        process = await spawn_bot(env, logs, tmp_path)

        def connected() -> bool:
            return any(s.ready and s.conn is not None and not s.dead for s in discord.gateway.sessions.values())

        await discord.wait_for(connected, 30)  # the previous process's session is dead by now
        return process

    async def kill_when(condition: Callable[[], bool]) -> None:
        assert proc is not None
        await wait_until(condition, within=60, interval=0.05)
        assert proc.returncode is None, f"the bot exited by itself: {logs.read_text()[-3000:]}"
        assert await stop_process(proc, signal.SIGKILL) == -signal.SIGKILL
        await discord.wait_for(lambda: not discord.gateway.has_live_session(), 10)

    try:
        proc = await start()
        files = {
            f"frame{k + 1}": (f"k{k + 1}.png", corpus.good_png(320, 240, KEYFRAMES[k]), "image/png") for k in range(4)
        }
        record = await discord.run_command(
            guild, channel, ALICE, "kf2v-story", {"prompt": "dawn | noon | dusk", "resolution": "480P"},
            attachments=files,
        )  # fmt: skip
        await record.wait_response(5)
        await record.wait_done(15)

        # Kill 1: a segment is at the provider. Kill 2: a segment is on disk and others are still running.
        await kill_when(lambda: dashscope.stats()["submissions_accepted"] >= 1)
        proc = await start()
        delivered = "SELECT COUNT(*) FROM jobs WHERE story_id = 1 AND state = 'delivered'"
        await kill_when(lambda: 1 <= db_count(db_path, delivered) < 3)
        proc = await start()

        await wait_until(lambda: story_posts(discord) >= 1, within=90, interval=0.1)
        await asyncio.sleep(1.0)  # time for a wrong second post to show
        assert await stop_process(proc, signal.SIGTERM) == 0

        assert story_posts(discord) == 1, "the story was posted more than once"
        store = await JobStore.open(db_path)
        try:
            jobs = [j for j in await store.all_jobs() if j.story_id == 1]
            ledger = await store.ledger()
            spend = await store.spend_by_guild()
        finally:
            await store.close()
        # The segments' videos are delivered as one post (counted above); their money is checked like any job's.
        money = await check_ledger(db_path, billed=billed_by_task(dashscope), reported_spend=spend)
        assert money.problems == []
        segments = sorted(j.segment_index for j in jobs if j.segment_index is not None)
        assert len(jobs) == 3 and segments == [0, 1, 2], "a segment job was duplicated"
        assert all(j.state is JobState.DELIVERED and j.charge_state is ChargeState.SETTLED for j in jobs)
        assert dashscope.stats()["submissions_accepted"] == 3, "a segment was submitted twice"
        for job in jobs:
            kinds = sorted(e.kind for e in ledger if e.job_id == job.id)
            assert kinds == ["reserve", "settle"], (job.id, kinds)  # paid once
        story_state = db_count(db_path, "SELECT posted_generation FROM stories WHERE id = 1")
        assert story_state == 1
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await dashscope.stop()
        await discord.stop()
