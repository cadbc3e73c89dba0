"""SIGKILL a real engine process at random moments; restart it on the same data dir; nothing is lost.

Afterwards every job ended exactly once, the provider saw exactly one submission per job, no video was
posted twice and the ledger balances.
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

ROOT = Path(__file__).resolve().parent.parent


async def run_with_kills(
    data_dir: Path, base_url: str, posts: Path, submit: int, kills: int, rng: random.Random
) -> tuple[int, int]:
    """Run the engine until it finishes, killing it `kills` times first. Returns (kills done, runs)."""
    done_kills = runs = 0
    while True:
        args = [sys.executable, "-m", "tests.engine_runner", str(data_dir), base_url, str(posts)]
        if runs == 0:
            args.append(str(submit))
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        runs += 1
        if done_kills < kills:
            try:
                await asyncio.wait_for(proc.wait(), rng.uniform(0.6, 2.5))
            except TimeoutError:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                done_kills += 1
                continue
        else:
            await asyncio.wait_for(proc.wait(), 180)
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        if proc.returncode == 0:
            return done_kills, runs
        raise AssertionError(f"engine exited {proc.returncode}: {err[-2000:]}")


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_thirty_jobs_survive_ten_sigkills(tmp_path: Path) -> None:
    emu = DashScopeEmulator(EmulatorConfig(seed=3, pending_s=(0.1, 0.4), running_s=(0.3, 0.9)))
    await emu.start()
    posts = tmp_path / "posts.txt"
    data_dir = tmp_path / "data"
    try:
        kills, runs = await run_with_kills(data_dir, emu.base_url, posts, 30, 12, random.Random(11))
        assert kills >= 10
        store = await JobStore.open(data_dir / "kf2v.sqlite3")
        try:
            jobs = await store.all_jobs()
            ledger = await store.ledger()
        finally:
            await store.close()
        # Jobs submitted before a kill in the first run may be fewer than 30 (the kill interrupted the
        # loop); every job that exists must have ended exactly once.
        assert jobs, "no job was created"
        assert all(j.state in (JobState.DELIVERED, JobState.FAILED) for j in jobs), [j.state for j in jobs]
        lines = posts.read_text().splitlines()
        videos = [int(line.split()[1]) for line in lines if line.startswith("video ")]
        assert len(videos) == len(set(videos)), "a video was posted twice"
        assert sorted(videos) == sorted(j.id for j in jobs if j.state is JobState.DELIVERED)
        stats = emu.stats()
        assert stats["submissions_accepted"] == len([j for j in jobs if j.task_id]), "duplicate submission"
        assert stats["violations"] == []
        settled = sum(e.amount for e in ledger if e.kind == "settle")
        assert settled == sum(j.cost_settled for j in jobs if j.state is JobState.DELIVERED)
        open_reservations = {e.job_id for e in ledger if e.kind == "reserve"} - {
            e.job_id for e in ledger if e.kind in ("settle", "release")
        }
        assert open_reservations == set()
        print(f"kills={kills} runs={runs} jobs={len(jobs)} submissions={stats['submissions_accepted']}")
    finally:
        await emu.stop()
