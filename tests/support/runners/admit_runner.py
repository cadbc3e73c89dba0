"""A process that admits jobs in a tight loop, for kill-during-a-write tests.

`python -m tests.support.runners.admit_runner DATA_DIR BASE_URL PROGRESS [WINDOW_S] [HOLD_AT]`

It runs the real engine (store, budget, worker against the DashScope emulator) and calls
`JobService.submit` over and over for a few guilds. Every reserve ledger row is written after a pause of
WINDOW_S inside the admission transaction (after the job row is inserted). The HOLD_AT-th reservation of
the run (1-based; 0: none) pauses until the process is killed, so the test's SIGKILL lands inside that open
write transaction for certain. PROGRESS gets one unbuffered line per step ("ready", "begin N",
"window JOB_ID" once the job row is written and before its reservation, "done N JOB_ID", "refused N KEY"):
the test reads the last line to know where the kill landed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.app import build_services
from bot.errors import BotError
from bot.jobs.db import Transaction
from bot.jobs.store import JobStore
from tests.support.engine import draft, engine_settings
from tests.support.recording import PostLogNotifier

GUILDS = (1, 2, 3, 4)
POST_LOG = "posts.log"
EXTRA_KEYS = "sk-admitrunner0000000001,sk-admitrunner0000000002"


# Shared with the test's final in-process engine: same accounts (three: 6 submissions/s), same budgets.
RUNNER_SETTINGS: dict[str, Any] = {"KF2V_DASHSCOPE_EXTRA_API_KEYS": EXTRA_KEYS, "KF2V_DEFAULT_DAILY_BUDGET": 6}


def _log(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode())


async def main(data_dir: Path, base_url: str, progress: Path, window_s: float, hold_at: int = 0) -> int:
    original = JobStore._ledger
    fd = os.open(progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    reservations = 0

    async def slow_ledger(db: Transaction, job_id: int, guild_id: int, kind: str, amount: int, now: datetime) -> None:
        nonlocal reservations
        if kind == "reserve":
            reservations += 1
            _log(fd, f"window {job_id}")  # the job row is written, its reservation not yet: kill me here
            await asyncio.sleep(3600 if reservations == hold_at else window_s)
        await original(db, job_id, guild_id, kind, amount, now)

    JobStore._ledger = staticmethod(slow_ledger)  # type: ignore[method-assign]
    settings = engine_settings(data_dir, base_url, **RUNNER_SETTINGS)
    # Posts go to a log in the data dir: the test counts every job's deliveries across the kills.
    services = await build_services(settings, PostLogNotifier(log=data_dir / POST_LOG))
    services.worker.config = replace(services.worker.config, delivery_backoff_s=0.05, reconcile_grace_s=1.0)
    await services.start()
    _log(fd, "ready")
    i = 0
    try:
        while True:
            guild = GUILDS[i % len(GUILDS)]
            _log(fd, f"begin {i}")
            try:
                job = await services.jobs.submit(draft(guild=guild, user=100 + i % 5, prompt=f"admit {i}"))
            except BotError as exc:
                _log(fd, f"refused {i} {exc.key}")
            else:
                _log(fd, f"done {i} {job.id}")
            i += 1
    finally:
        os.close(fd)
        await services.stop()


if __name__ == "__main__":
    window = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
    hold = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    sys.exit(asyncio.run(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), window, hold)))
