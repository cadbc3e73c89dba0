"""handover: docs/scaling.md's "within a second" and "within about a second" on PostgreSQL, measured.

Two engines (what `kf2v-bot run` builds: pool, dispatcher lease, worker, LISTEN/NOTIFY follower) share one
PostgreSQL database (created for the run on KF2V_BENCH_DATABASE_URL's server, default the local one, and
dropped after) and the DashScope emulator, in this process:

* pause_s: `/kf2v-admin pause` handled by the standby (JobService.pause: stored, announced on commit on
  `kf2v_pauses`) -> the dispatcher's own JobService knows it (docs/scaling.md: "applies it within a second").
  Then the resume the same way (resume_s). Repeated `rounds` times each.
* stop_s: a graceful stop of the dispatcher (what SIGTERM runs: Services.stop releases the leases and
  notifies) -> the standby's worker is dispatching (docs/scaling.md: "a standby takes over within about a
  second"). A new standby is started after each stop.

Both engines share this process's event loop, so each figure includes the other's work: upper bounds.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench._common import note, r3, start_engine
from bench.failover import _with_database
from bot.app import Services
from bot.jobs.db import redact_url
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig

ROUNDS = {"tiny": 2, "full": 10}
GUILD = 4242


async def _until(predicate: Any, within: float = 30.0) -> float:
    """Seconds until `predicate()` is true, checked every 5 ms."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > within:
            raise TimeoutError(f"not within {within:.0f} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def measure(size: str, **_options: Any) -> dict[str, Any]:
    server = os.environ.get("KF2V_BENCH_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    name = f"kf2v_bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(server, timeout=5)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server, name)
    emulator = DashScopeEmulator(EmulatorConfig(seed=3))
    await emulator.start()
    engines: list[Services] = []
    pauses: list[float] = []
    resumes: list[float] = []
    stops: list[float] = []
    rounds = ROUNDS.get(size, ROUNDS["full"])
    try:
        with tempfile.TemporaryDirectory(prefix="kf2v-bench-") as tmp:

            async def engine() -> Services:
                services, _ = await start_engine(Path(tmp), emulator.base_url, time_scale=1.0, KF2V_DATABASE_URL=url)
                engines.append(services)
                return services

            first, second = await engine(), await engine()
            await _until(lambda: first.worker.alive or second.worker.alive)
            holder, standby = (first, second) if first.worker.alive else (second, first)
            for i in range(rounds):
                started = time.monotonic()
                await standby.jobs.pause(f"bench round {i}", guild_id=GUILD)
                pauses.append(
                    time.monotonic() - started + await _until(lambda: holder.jobs.pause_for(GUILD) is not None)
                )
                started = time.monotonic()
                await standby.jobs.resume(guild_id=GUILD)
                resumes.append(time.monotonic() - started + await _until(lambda: holder.jobs.pause_for(GUILD) is None))
            for i in range(rounds):
                started = time.monotonic()
                await holder.stop()  # what SIGTERM runs in `kf2v-bot run`
                stops.append(time.monotonic() - started + await _until(lambda s=standby: s.worker.alive))
                note(f"handover: stop {i + 1}: the standby dispatching {stops[-1]:.3f} s after the stop began")
                engines.remove(holder)
                holder, standby = standby, await engine()
    finally:
        for services in engines:
            if not services.http.closed:
                await services.stop()
        await emulator.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return {
        "bench": "handover",
        "size": size,
        "database": redact_url(server),
        "rounds": rounds,
        "pause_s_p50": r3(statistics.median(pauses)),
        "pause_s_max": r3(max(pauses)),
        "resume_s_p50": r3(statistics.median(resumes)),
        "resume_s_max": r3(max(resumes)),
        "stop_s_p50": r3(statistics.median(stops)),
        "stop_s_max": r3(max(stops)),
        "target_s": 1.0,
    }
