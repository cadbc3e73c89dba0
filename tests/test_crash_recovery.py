"""SIGKILL a real engine process at random moments; restart it on the same data dir; nothing is lost.

Exactly 12 kills, each with jobs unfinished; afterwards every one of the 30 jobs was delivered exactly once,
the provider saw exactly one submission per job, no video was posted twice and the ledger balances.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from bot.jobs.models import JobState
from bot.jobs.store import JobStore
from bot.sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.harness import wait_until

ROOT = Path(__file__).resolve().parent.parent


JOBS = 30
KILLS = 12


async def unfinished_jobs(db_path: Path) -> tuple[int, int]:
    """(jobs in the database, jobs not final), read-only: the engine may be running."""
    import aiosqlite

    if not db_path.exists():
        return 0, 0
    async with aiosqlite.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        try:
            rows = await db.execute_fetchall("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        except aiosqlite.OperationalError:  # not migrated yet
            return 0, 0
    counts = {JobState(str(r[0])): int(r[1]) for r in rows}
    return sum(counts.values()), sum(n for state, n in counts.items() if not state.is_final)


async def run_with_kills(data_dir: Path, base_url: str, posts: Path, rng: random.Random) -> tuple[int, int, list[int]]:
    """Run the engine until it finishes, SIGKILLing it KILLS times first, the first kill only once all JOBS
    jobs were admitted. Returns (kills done, runs, unfinished jobs at each kill)."""
    db_path = data_dir / "kf2v.sqlite3"
    done_kills = runs = 0
    unfinished: list[int] = []
    while True:
        args = [sys.executable, "-m", "tests.engine_runner", str(data_dir), base_url, str(posts)]
        if runs == 0:
            args.append(str(JOBS))
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        runs += 1
        if runs == 1:

            async def all_admitted(first: asyncio.subprocess.Process = proc) -> bool:
                return (await unfinished_jobs(db_path))[0] == JOBS or first.returncode is not None

            await wait_until(all_admitted, within=60, interval=0.05)
        if done_kills < KILLS:
            try:
                await asyncio.wait_for(proc.wait(), rng.uniform(0.6, 2.0))
            except TimeoutError:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                done_kills += 1
                unfinished.append((await unfinished_jobs(db_path))[1])
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
async def test_thirty_jobs_survive_twelve_sigkills(tmp_path: Path) -> None:
    # Slow enough that the 30 jobs (2 in flight) outlast the 12 kills: every kill lands with work unfinished.
    emu = DashScopeEmulator(EmulatorConfig(seed=3, pending_s=(0.2, 0.6), running_s=(1.5, 2.5)))
    await emu.start()
    posts = tmp_path / "posts.txt"
    data_dir = tmp_path / "data"
    try:
        kills, runs, unfinished = await run_with_kills(data_dir, emu.base_url, posts, random.Random(11))
        assert kills == KILLS, f"the engine finished after {kills} kills"
        assert len(unfinished) == KILLS and min(unfinished) > 0, unfinished
        store = await JobStore.open(data_dir / "kf2v.sqlite3")
        try:
            jobs = await store.all_jobs()
            ledger = await store.ledger()
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
        print(
            f"\nRELIABILITY engine-kills kills={kills} runs={runs} jobs={len(jobs)} delivered={len(videos)} "
            f"submissions={stats['submissions_accepted']} unfinished_at_kills={unfinished}"
        )
    finally:
        await emu.stop()
