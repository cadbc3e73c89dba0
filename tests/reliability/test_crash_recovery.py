"""SIGKILL a real engine process at random moments; restart it on the same data dir; nothing is lost.

Exactly 12 kills (SQLite) or 4 (PostgreSQL, where each restart first waits for the dead process's dispatcher
lease to expire, ~7 s), each with jobs unfinished; afterwards every one of the 30 jobs was delivered exactly
once, the provider saw exactly one submission per job, no video was posted twice and the ledger balances.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.jobs.models import JobState
from bot.jobs.store import JobStore
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support.ledger_check import billed_by_task, check_ledger, delivery_problems, job_states
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


JOBS = 30
KILLS = {"sqlite": 12, "postgresql": 4}
COUNT_BY_STATE = "SELECT state, COUNT(*) FROM jobs GROUP BY state"


class Database:
    """Read-only looks at the engine's database while it runs: its jobs and (PostgreSQL) the dispatcher lease."""

    def __init__(self, data_dir: Path, store_env: dict[str, Any]) -> None:
        self.path = data_dir / "kf2v.sqlite3"
        self.url: str | None = store_env.get("KF2V_DATABASE_URL")

    async def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.url is not None:
            conn = await asyncpg.connect(self.url, timeout=5)
            try:
                return [tuple(r) for r in await conn.fetch(sql)]
            except asyncpg.UndefinedTableError:  # not migrated yet
                return []
            finally:
                await conn.close()
        import aiosqlite

        if not self.path.exists():
            return []
        async with aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True) as db:
            try:
                return [tuple(r) for r in await db.execute_fetchall(sql)]
            except aiosqlite.OperationalError:  # not migrated yet
                return []

    async def unfinished_jobs(self) -> tuple[int, int]:
        """(jobs in the database, jobs not final)."""
        counts = {JobState(str(r[0])): int(r[1]) for r in await self._rows(COUNT_BY_STATE)}
        return sum(counts.values()), sum(n for state, n in counts.items() if not state.is_final)

    async def lease_epoch(self) -> int:
        """The highest live dispatcher-lease epoch (0: none live): a new holder takes a larger one."""
        if self.url is None:
            return 0
        sql = "SELECT COALESCE(MAX(epoch), 0) FROM kf2v_leases WHERE expires_at > clock_timestamp()"
        rows = await self._rows(sql)
        return int(rows[0][0]) if rows else 0

    async def open_store(self) -> JobStore:
        return await (JobStore.open_url(self.url) if self.url is not None else JobStore.open(self.path))


async def run_with_kills(
    data_dir: Path, base_url: str, posts: Path, rng: random.Random, store_env: dict[str, Any], kills: int
) -> tuple[int, int, list[int]]:
    """Run the engine until it finishes, SIGKILLing it `kills` times first, the first kill only once all JOBS
    jobs were admitted (on PostgreSQL: each only once that process holds the dispatcher lease, so every kill
    lands on a dispatching process, not a standby). Returns (kills done, runs, unfinished jobs at each kill)."""
    database = Database(data_dir, store_env)
    done_kills = runs = 0
    unfinished: list[int] = []
    epoch = 0
    while True:
        args = [sys.executable, "-m", "tests.support.runners.engine_runner", str(data_dir), base_url, str(posts)]
        if runs == 0:
            args.append(str(JOBS))
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT), **store_env},
        )  # fmt: skip
        runs += 1
        if runs == 1:

            async def all_admitted(first: asyncio.subprocess.Process = proc) -> bool:
                return (await database.unfinished_jobs())[0] == JOBS or first.returncode is not None

            await wait_until(all_admitted, within=60, interval=0.05)
        if store_env and done_kills < kills:

            async def took_the_lease(current: asyncio.subprocess.Process = proc, seen: int = epoch) -> bool:
                return await database.lease_epoch() > seen or current.returncode is not None

            await wait_until(took_the_lease, within=30, interval=0.05)
            epoch = await database.lease_epoch()
        if done_kills < kills:
            try:
                await asyncio.wait_for(proc.wait(), rng.uniform(0.6, 2.0))
            except TimeoutError:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                done_kills += 1
                unfinished.append((await database.unfinished_jobs())[1])
                continue
        else:
            await asyncio.wait_for(proc.wait(), 180)
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        if proc.returncode == 0:
            return done_kills, runs, unfinished
        raise AssertionError(f"engine exited {proc.returncode}: {err[-2000:]}")


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_thirty_jobs_survive_repeated_sigkills(tmp_path: Path, engine: str, store_env: dict[str, Any]) -> None:
    # Slow enough that the 30 jobs (2 in flight) outlast the 12 kills: every kill lands with work unfinished.
    emu = DashScopeEmulator(EmulatorConfig(seed=3, pending_s=(0.2, 0.6), running_s=(1.5, 2.5)))
    await emu.start()
    posts = tmp_path / "posts.txt"
    data_dir = tmp_path / "data"
    try:
        kills, runs, unfinished = await run_with_kills(
            data_dir, emu.base_url, posts, random.Random(11), store_env, KILLS[engine]
        )
        assert kills == KILLS[engine], f"the engine finished after {kills} kills"
        assert len(unfinished) == kills and min(unfinished) > 0, unfinished
        store = await Database(data_dir, store_env).open_store()
        try:
            jobs = await store.all_jobs()
            ledger = await store.ledger()
            spend = await store.spend_by_guild()
        finally:
            await store.close()
        # No failure is injected: every one of the 30 jobs is delivered.
        assert len(jobs) == JOBS
        assert all(j.state is JobState.DELIVERED for j in jobs), [j.state for j in jobs]
        lines = posts.read_text().splitlines()
        videos = [int(line.split()[1]) for line in lines if line.startswith("video ")]
        assert len(videos) == len(set(videos)), "a video was posted twice"
        assert sorted(videos) == sorted(j.id for j in jobs)
        stats = emu.stats()
        assert stats["submissions_accepted"] == JOBS, "a job was submitted twice"
        assert stats["violations"] == []
        settled = sum(e.amount for e in ledger if e.kind == "settle")
        assert settled == sum(j.cost_settled for j in jobs)
        open_reservations = {e.job_id for e in ledger if e.kind == "reserve"} - {
            e.job_id for e in ledger if e.kind in ("settle", "release")
        }
        assert open_reservations == set()
        source = store_env.get("KF2V_DATABASE_URL") or data_dir / "kf2v.sqlite3"
        money = await check_ledger(source, billed=billed_by_task(emu), reported_spend=spend)
        assert money.problems == []
        assert delivery_problems(await job_states(source), Counter(videos), expected_jobs=JOBS) == []
        print(
            f"\nRELIABILITY engine-kills engine={engine} kills={kills} runs={runs} jobs={len(jobs)} "
            f"delivered={len(videos)} "
            f"submissions={stats['submissions_accepted']} unfinished_at_kills={unfinished} {money.summary()}"
        )
    finally:
        await emu.stop()
