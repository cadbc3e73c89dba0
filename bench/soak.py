"""soak: 5,000 jobs through the engine; does its memory stay flat once warm? (issue 17)

The engine (build_services: JobService, scheduler, worker, SQLite store) runs in a process of its own, so
its resident memory is its own; the DashScope emulator runs in this process with the provider's observed
timings (EmulatorConfig.realistic()) divided by the time scale, and the engine's time constants by the same
factor. Ten API keys (each its own account: 2 tasks in flight per model) let the jobs through quickly.
A feeder keeps a window of jobs admitted through JobService.submit (the same two frames: decoded once,
then the verdict cache), each delivered to a notifier that only counts (and removes the posted file, as a
real post would leave nothing to keep), so nothing in the bench itself grows with the jobs.

Figures (the engine process's VmRSS, after a full garbage collection): at the end of the warm-up (the
first 500 jobs finished), then every 500 jobs, and at the end; growth_mib = end - warm-up (target ≤ 20 MB).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import API_KEY, ROOT, flat_png, note, r3, rss_mb, start_engine
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig

DEFAULTS: dict[str, dict[str, float]] = {
    "tiny": {"jobs": 30, "warmup": 10, "time_scale": 2000.0, "accounts": 4, "every": 10},
    "full": {"jobs": 5000, "warmup": 500, "time_scale": 2000.0, "accounts": 10, "every": 500},
}
TARGET_GROWTH_MB = 20.0


class CountingNotifier:
    """The engine's door to people, reduced to counts: keeps nothing per job."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.alerts = 0
        self.finished = asyncio.Event()

    async def job_updated(self, job: Any, progress: Any) -> None:
        return None

    async def deliver(self, job: Any, video: Any, *, redelivery: bool) -> None:
        if video.path:
            await asyncio.to_thread(Path(video.path).unlink, missing_ok=True)  # posted: nothing left on disk
        self.delivered += 1
        self.finished.set()

    async def job_failed(self, job: Any) -> None:
        self.failed += 1
        self.finished.set()

    async def owner_alert(self, key: str, **params: Any) -> None:
        self.alerts += 1


def settled_rss() -> float:
    gc.collect()
    return rss_mb()


async def run_engine(
    base_url: str, data_dir: Path, jobs: int, warmup: int, time_scale: float, accounts: int, every: int
) -> dict[str, Any]:
    """In the engine's own process: feed `jobs` jobs, sample RSS; returns the figures."""
    from bot.jobs.models import JobRequest
    from bot.jobs.service import Draft

    notifier = CountingNotifier()
    extra_keys = ",".join(f"{API_KEY}-{i}" for i in range(1, accounts))
    services, _ = await start_engine(
        data_dir, base_url, time_scale=time_scale, notifier=notifier, KF2V_DASHSCOPE_EXTRA_API_KEYS=extra_keys
    )
    first, last = flat_png(colour=(200, 40, 40)), flat_png(colour=(40, 40, 200))
    window = 4 * 2 * accounts  # a few jobs queued behind every slot
    submitted = 0
    samples: dict[int, float] = {}
    next_mark, warm = warmup, None
    started = time.monotonic()
    try:
        while notifier.delivered + notifier.failed < jobs:
            done = notifier.delivered + notifier.failed
            while submitted < jobs and submitted - done < window:
                guild = 1_000 + submitted % 50
                draft = Draft(
                    guild_id=guild,
                    channel_id=guild * 10,
                    user_id=guild * 100 + submitted % 7,
                    locale="en-US",
                    first_image=first,
                    last_image=last,
                    request=JobRequest(prompt=f"soak job {submitted}: a red square turns blue", resolution="480P"),
                )
                await services.jobs.submit(draft)
                submitted += 1
            notifier.finished.clear()
            await notifier.finished.wait()
            done = notifier.delivered + notifier.failed
            if done >= next_mark:  # the first mark at the end of the warm-up, then every `every` jobs
                samples[done] = r3(settled_rss())
                print(f"[bench] soak: {done} jobs finished, RSS {samples[done]} MiB", file=sys.stderr, flush=True)
                warm = warm if warm is not None else samples[done]
                next_mark = min(next_mark + every, jobs)
        wall = time.monotonic() - started
        end = r3(settled_rss())
        warm = warm if warm is not None else end
        return {
            "jobs": jobs,
            "delivered": notifier.delivered,
            "failed": notifier.failed,
            "owner_alerts": notifier.alerts,
            "warmup_jobs": warmup,
            "rss_warm_mib": warm,
            "rss_end_mib": end,
            "growth_mib": r3(end - warm),
            "rss_samples_mib": samples,
            "wall_s": r3(wall),
            "jobs_per_s": r3(jobs / wall),
        }
    finally:
        await services.stop()


async def measure(
    size: str, *, jobs: int | None = None, time_scale: float | None = None, seed: int = 11
) -> dict[str, Any]:
    d = DEFAULTS[size]
    n = jobs or int(d["jobs"])
    scale = time_scale or d["time_scale"]
    accounts = int(d["accounts"])
    warmup = min(int(d["warmup"]), n)
    note(f"soak: {n} jobs, {accounts} accounts, time scale {scale:g}")
    emulator = DashScopeEmulator(EmulatorConfig.realistic(time_scale=scale, seed=seed))
    await emulator.start()
    try:
        with tempfile.TemporaryDirectory(prefix="kf2v-bench-") as tmp:
            args = [emulator.base_url, tmp, str(n), str(warmup), str(scale), str(accounts), str(int(d["every"]))]
            engine = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.soak", "engine", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await engine.communicate()
            if engine.returncode != 0:
                raise RuntimeError(f"the soak's engine process failed (exit {engine.returncode})")
            figures = json.loads(out.decode().strip().splitlines()[-1])
        stats = emulator.stats()
        return {
            "bench": "soak",
            "size": size,
            "time_scale": scale,
            "accounts": accounts,
            **figures,
            "tasks": stats["submissions_accepted"],
            "limit_violations": len(stats["violations"]),
            "target_growth_mib": TARGET_GROWTH_MB,
        }
    finally:
        await emulator.stop()


if __name__ == "__main__" and sys.argv[1:2] == ["engine"]:
    base, data, n_jobs, n_warm, scale_text, n_accounts, n_every = sys.argv[2:9]
    result = asyncio.run(
        run_engine(base, Path(data), int(n_jobs), int(n_warm), float(scale_text), int(n_accounts), int(n_every))
    )
    print(json.dumps(result), flush=True)
