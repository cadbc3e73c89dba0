"""Crash campaigns beyond tests/reliability/test_crash_recovery.py (which kills the engine process with a file
notifier).

1. Kill during a database write: a process admits jobs in a tight loop (reserve + job row in one
   transaction) and is SIGKILLed 12 times, each time inside an admission: the runner holds a chosen
   admission's transaction open after the job row is written and before its reservation, and the test kills
   it there. No reservation may be orphaned (every reserve row has its job and every job its reserve row),
   exactly the acknowledged admissions survive, and after a restart every job is delivered with the ledger
   balanced and no budget over its limit.
2. The real bot: `python -m bot run` against both emulators running in this test process, killed at
   random moments while jobs run and restarted on the same data dir. Discord's posts are recorded by the
   emulator, so "no video posted twice" is checked there (the notifier's redelivery check reads the thread).

Each test prints one `RELIABILITY ...` line of figures (pytest -s shows it) for the table in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bot.jobs.models import ChargeState, GuildPolicy, JobState
from bot.jobs.store import JobStore
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support.engine import all_final, start_engine
from tests.support.ledger_check import billed_by_task, check_ledger, delivery_problems, job_states
from tests.support.recording import PostLogNotifier
from tests.support.runners.admit_runner import GUILDS, POST_LOG, RUNNER_SETTINGS
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
TIGHT_GUILD = GUILDS[-1]
TIGHT_BUDGET = 1000  # milli-CNY: two 480P videos, then refusals inside the same transaction


async def _wait_for_windows(path: Path, count: int, proc: asyncio.subprocess.Process, within: float) -> None:
    """Until the runner's `count`-th admission of this run holds its transaction open (its last line)."""

    def held() -> bool:
        lines = path.read_text().splitlines() if path.exists() else []
        return sum(line.startswith("window ") for line in lines) == count and lines[-1].startswith("window ")

    async def ready() -> bool:
        if proc.returncode is not None:
            assert proc.stderr is not None
            err = (await proc.stderr.read()).decode()
            raise AssertionError(f"runner exited {proc.returncode}: {err[-3000:]}")
        return held()

    await wait_until(ready, within=within, interval=0.02)


ADMISSION_KILLS = 12


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_kills_during_admission_writes_leave_no_orphaned_reservation(tmp_path: Path) -> None:
    emu = DashScopeEmulator(EmulatorConfig(seed=21, pending_s=(0.02, 0.08), running_s=(0.05, 0.2)))
    await emu.start()
    data_dir = tmp_path / "data"
    rng = random.Random(2024)
    kills = mid_write = 0
    acknowledged: set[int] = set()  # job ids the runner was told were admitted
    completed_before_kill = 0  # admissions that ran to the end before each run's held one
    try:
        store = await JobStore.open(data_dir / "kf2v.sqlite3")
        await store.save_policy(GuildPolicy(TIGHT_GUILD, daily_budget=TIGHT_BUDGET))
        await store.close()
        for run in range(ADMISSION_KILLS):
            progress = tmp_path / f"progress-{run}.txt"
            hold_at = rng.randint(1, 6)  # this run's admission to be killed in (earlier ones complete)
            completed_before_kill += hold_at - 1
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.support.runners.admit_runner", str(data_dir), emu.base_url,
                str(progress), "0.02", str(hold_at),
                cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
            try:
                await _wait_for_windows(progress, hold_at, proc, 60)
                assert proc.returncode is None, "the runner stopped by itself"
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            kills += 1
            lines = progress.read_text().splitlines()
            mid_write += lines[-1].startswith("window ")
            acknowledged |= {int(line.split()[2]) for line in lines if line.startswith("done ")}

        # Straight after the kills, before any recovery: no orphan either way, and exactly the acknowledged
        # admissions exist (each interrupted one rolled back as a whole).
        store = await JobStore.open(data_dir / "kf2v.sqlite3")
        try:
            integrity = await store.database.fetch_all("PRAGMA integrity_check")
            assert [tuple(r) for r in integrity] == [("ok",)]
            admitted = {j.id for j in await store.all_jobs()}
        finally:
            await store.close()
        middle = await check_ledger(data_dir / "kf2v.sqlite3", billed=None, expect_final=False)
        assert middle.problems == []
        assert admitted == acknowledged and len(admitted) == completed_before_kill

        # Restart on the same data dir: every job is delivered (no failure injected), money balances, no
        # budget went past its limit.
        poster = PostLogNotifier(log=data_dir / POST_LOG)
        services, _ = await start_engine(data_dir, emu.base_url, poster, **RUNNER_SETTINGS)
        try:
            ids = [j.id for j in await services.store.all_jobs()]
            await wait_until(lambda: all_final(services, ids), within=60, interval=0.1)
            jobs = await services.store.all_jobs()
            ledger = await services.store.ledger()
            assert all(j.state is JobState.DELIVERED for j in jobs), Counter(j.state for j in jobs)
            assert all(j.charge_state is ChargeState.SETTLED for j in jobs)
            settled = sum(e.amount for e in ledger if e.kind == "settle")
            delivered_cost = sum(j.cost_settled for j in jobs)
            periods = services.budget.periods()
            for guild in GUILDS:
                usage = await services.store.guild_usage(guild, 0, periods.day, periods.month)
                policy = await services.budget.policy(guild)
                assert 0 <= usage.used_day <= policy.daily_budget, (guild, usage, policy)
            stats = emu.stats()
            assert stats["submissions_accepted"] == len(jobs), "a job was submitted twice"
            assert stats["violations"] == []
            spend = await services.store.spend_by_guild()
            posts = Counter(poster.posted())  # the runners' posts before the kills, and this engine's
        finally:
            await services.stop()
        assert settled == delivered_cost
        source = data_dir / "kf2v.sqlite3"
        money = await check_ledger(source, billed=billed_by_task(emu), reported_spend=spend)
        assert money.problems == []
        assert delivery_problems(await job_states(source), posts, expected_jobs=completed_before_kill) == []
        assert (kills, mid_write) == (ADMISSION_KILLS, ADMISSION_KILLS), f"{mid_write} of {kills} inside an admission"
        print(
            f"\nRELIABILITY db-write-kills kills={kills} mid_write={mid_write} jobs={len(jobs)} "
            f"delivered={len(jobs)} orphaned_reservations=0 lost=0 "
            f"duplicate_submissions={stats['submissions_accepted'] - len(jobs)} "
            f"ledger_difference={settled - delivered_cost} {money.summary()}"
        )
    finally:
        await emu.stop()


# --- the real bot process --------------------------------------------------------------------------


async def _db_states(db_path: Path) -> dict[str, int]:
    import aiosqlite

    if not db_path.exists():
        return {}
    async with aiosqlite.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        try:
            rows = await db.execute_fetchall("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        except aiosqlite.OperationalError:  # not migrated yet
            return {}
    return {str(r[0]): int(r[1]) for r in rows}


KILLS = 8
JOBS = 14


@pytest.mark.slow
@pytest.mark.timeout(170)
async def test_real_bot_process_survives_sigkills(tmp_path: Path) -> None:
    from sandbox.discord_emu import DiscordEmulator
    from tests.support import corpus
    from tests.support.reliability import (
        ALICE,
        BOB,
        FAKE_API_KEY,
        FAKE_BOT_TOKEN,
        OWNER,
        bot_env,
        find_secrets,
        spawn_bot,
        stop_process,
        videos_per_job,
    )

    rng = random.Random(77)
    discord = DiscordEmulator(owner_id=OWNER, bot_token=FAKE_BOT_TOKEN)
    await discord.start()
    places = []
    for n in range(2):
        guild = discord.add_guild(f"Guild {n}")
        channel = discord.add_text_channel(guild, "videos")
        for user in (ALICE, BOB):
            discord.add_member(guild, user, f"user-{user}")
        places.append((guild, channel))
    dashscope = DashScopeEmulator(
        EmulatorConfig(api_key=FAKE_API_KEY, seed=8, pending_s=(0.2, 0.6), running_s=(0.4, 1.2))
    )
    await dashscope.start()
    data_dir = tmp_path / "data"
    db_path = data_dir / "kf2v.sqlite3"
    logs = tmp_path / "bot.log"
    env = bot_env(discord, dashscope, data_dir)
    commands = [(places[i % 2], (ALICE, BOB)[i // 2 % 2], f"scene {i}: a lantern drifts") for i in range(JOBS)]
    records = []
    unfinished: list[int] = []  # jobs not yet final at each kill
    kills = runs = 0
    proc: asyncio.subprocess.Process | None = None
    try:
        while True:
            started = time.monotonic()
            proc = await spawn_bot(env, logs, tmp_path)
            runs += 1

            def connected(since: float = started) -> bool:
                return any(
                    s.ready and s.conn is not None and not s.dead and s.created_at > since
                    for s in discord.gateway.sessions.values()
                )

            await discord.wait_for(connected, 30)
            for _ in range(2):
                if not commands:
                    break
                (guild, channel), user, prompt = commands.pop(0)
                record = await discord.run_command(
                    guild, channel, user, "kf2v", {"prompt": prompt, "resolution": "480P"},
                    attachments={"first_frame": ("a.png", corpus.good_png(320, 240, corpus.RED), "image/png"),
                                 "last_frame": ("b.png", corpus.good_png(320, 240, corpus.BLUE), "image/png")},
                )  # fmt: skip
                await record.wait_response(5)
                await record.wait_done(10)
                records.append(record)
            if kills < KILLS:
                await asyncio.sleep(rng.uniform(0.2, 2.0))
                assert proc.returncode is None, f"the bot exited by itself: {logs.read_text()[-3000:]}"
                await stop_process(proc, signal.SIGKILL)
                kills += 1
                states = await _db_states(db_path)
                unfinished.append(sum(n for s, n in states.items() if s not in ("delivered", "failed", "canceled")))
                await discord.wait_for(lambda: not discord.gateway.has_live_session(), 10)
                continue
            if commands:
                continue

            async def finished() -> bool:
                states = await _db_states(db_path)
                return bool(states) and all(s in ("delivered", "failed", "canceled") for s in states)

            await wait_until(finished, within=60, interval=0.2)
            assert await stop_process(proc, signal.SIGTERM) == 0
            break

        store = await JobStore.open(db_path)
        try:
            jobs = await store.all_jobs()
            ledger = await store.ledger()
            spend = await store.spend_by_guild()
        finally:
            await store.close()
        money = await check_ledger(db_path, billed=billed_by_task(dashscope), reported_spend=spend)
        assert money.problems == []
        assert (kills, runs) == (KILLS, KILLS + 1)
        assert len(jobs) == len(records) == JOBS, "every answered command made exactly one job"
        assert all(j.state is JobState.DELIVERED for j in jobs), Counter(j.state for j in jobs)
        posts = videos_per_job(discord)
        assert posts == Counter({j.id: 1 for j in jobs}), f"posted: {posts}"
        assert delivery_problems(await job_states(db_path), posts, expected_jobs=JOBS) == []
        stats = dashscope.stats()
        assert stats["submissions_accepted"] == len(jobs), "a job was submitted twice"
        assert stats["violations"] == []
        settled = sum(e.amount for e in ledger if e.kind == "settle")
        assert settled == sum(j.cost_settled for j in jobs)
        leaks = find_secrets([("bot logs", logs.read_bytes()), *((p, b) for p, b in _files(data_dir))])
        assert leaks == []
        print(
            f"\nRELIABILITY real-bot-kills kills={kills} runs={runs} jobs={len(jobs)} lost=0 "
            f"duplicate_submissions={stats['submissions_accepted'] - len(jobs)} "
            f"duplicate_deliveries={sum(n - 1 for n in posts.values())} "
            f"ledger_difference={settled - sum(j.cost_settled for j in jobs)} unfinished_at_kills={unfinished} "
            f"{money.summary()}"
        )
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await dashscope.stop()
        await discord.stop()


def _files(folder: Path) -> list[tuple[str, bytes]]:
    from tests.support.reliability import files_under

    return list(files_under(folder))
