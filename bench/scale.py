"""scale: a backlog of 10,000 queued jobs from 1,000 guilds: admission rate, dispatch decisions, memory, restart.

* enqueue_per_s: the first half of the jobs through the whole path, JobService.submit: per-user rate
  check, text and channel checks, both images checked and stored (content-addressed: every job uses the
  same two 320x240 PNGs, written once), the budget decision and the job row in one SQLite transaction, then
  the in-memory fair queue. The two PNGs are fully decoded once; every later job meets the image workers'
  verdict cache (same bytes, same limits). `admission` measures the same path with no two frames alike.
* admit_per_s (extra): the other half with the image checks left out (the frames were checked and stored
  once): BudgetService.admit (the budget decision and the job row, one transaction) + Worker.enqueue.
  The difference is what decoding two frames per job costs.
  Both: 32 submitters at once (many members at the same time); admissions serialise on the database's write
  lock. The worker is not started (nothing is sent to a provider), so the whole backlog stays queued.
  10 % of the jobs use the plus model (720P).
* dispatch_p99_ms: Scheduler.next_dispatch (the pure decision: which job next, on which account) on that
  backlog: decisions with a free lane for both models, then with the flash lane full so every decision has
  to look past flash jobs for a plus one (the worst case of the fair queue's scan).
* rss_mb: resident memory of this process after the restart below, holding the rebuilt 10,000-job queue
  (rss_peak_mb: the peak over the whole run).
* recovery_s: a restart on that database: build_services + JobService.load_pause_state + Worker.recover()
  until the 10,000 jobs are back in the fair queue in their original order.
* positions_ms (extra): one FairQueue.positions() (every queued job's place), which status messages use.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench._common import (
    FLASH,
    PLUS,
    bench_settings,
    flat_png,
    note,
    peak_rss_mb,
    percentile,
    r3,
    retime_engine,
    rss_mb,
)
from bot.app import build_services
from bot.jobs.models import JobRequest, NewJob
from bot.jobs.service import Draft
from tests.support.recording import RecordingNotifier

DEFAULTS = {"tiny": {"jobs": 300, "guilds": 30}, "full": {"jobs": 10_000, "guilds": 1_000}}
SUBMITTERS = 32
USERS_PER_GUILD = 5
NOWHERE = "http://127.0.0.1:9/api/v1"  # the worker never starts: no request is ever made


def drafts(jobs: int, guilds: int) -> list[Draft]:
    first, last = flat_png(colour=(200, 40, 40)), flat_png(colour=(40, 40, 200))
    out = []
    for i in range(jobs):
        guild = 10_000 + i % guilds
        plus = i % 10 == 9
        out.append(
            Draft(
                guild_id=guild,
                channel_id=guild * 10,
                user_id=guild * 100 + (i // guilds) % USERS_PER_GUILD,
                locale="en-US",
                first_image=first,
                last_image=last,
                request=JobRequest(
                    prompt=f"scale job {i}: a red square turns blue",
                    model=PLUS if plus else FLASH,
                    resolution="720P" if plus else "480P",
                ),
            )
        )
    return out


def time_decisions(services: Any, free_lane_decisions: int, blocked_decisions: int) -> tuple[list[float], list[float]]:
    """Milliseconds per Scheduler.next_dispatch: with free lanes, then with the flash lane full."""
    scheduler = services.scheduler
    limits = scheduler.limits
    account = limits.accounts[0]
    now = time.monotonic()
    free: list[float] = []
    for _ in range(free_lane_decisions):
        started = time.perf_counter()
        picked = scheduler.next_dispatch(now)
        free.append((time.perf_counter() - started) * 1000)
        assert picked is not None
        job, chosen = picked
        limits.begin_submit(chosen, job.model, job.job_id, now)
        limits.end_submit(chosen, job.job_id)
        limits.release(chosen, job.model, job.job_id)
        now += 0.6  # two submissions per 1.1 s window are allowed: stay clear of the rate limit
    for fake in (-1, -2):  # the flash lane is full: two tasks in flight
        limits.occupy(account, FLASH, fake)
    blocked: list[float] = []
    for _ in range(blocked_decisions):
        started = time.perf_counter()
        picked = scheduler.next_dispatch(now)
        blocked.append((time.perf_counter() - started) * 1000)
        if picked is None:
            break
        job, chosen = picked
        assert job.model == PLUS
        limits.begin_submit(chosen, job.model, job.job_id, now)
        limits.end_submit(chosen, job.job_id)
        limits.release(chosen, job.model, job.job_id)
        now += 0.6
    return free, blocked


async def concurrently(step: Callable[[Draft], Awaitable[None]], drafts: list[Draft]) -> float:
    """Seconds to run `step` over `drafts` with SUBMITTERS at once."""
    pending: asyncio.Queue[Draft] = asyncio.Queue()
    for draft in drafts:
        pending.put_nowait(draft)

    async def submitter() -> None:
        while not pending.empty():
            await step(pending.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
    return time.perf_counter() - started


async def measure(size: str, *, jobs: int | None = None, seed: int = 3) -> dict[str, Any]:
    n = jobs or DEFAULTS[size]["jobs"]
    guilds = min(DEFAULTS[size]["guilds"], n)
    note(f"scale: {n} jobs from {guilds} guilds")
    with tempfile.TemporaryDirectory(prefix="kf2v-bench-") as tmp:
        data = Path(tmp)
        settings = bench_settings(data, NOWHERE)
        services = await build_services(settings, RecordingNotifier())
        retime_engine(services, 1.0)
        work = drafts(n, guilds)
        half = n // 2
        jobs_service, budget, worker, media = services.jobs, services.budget, services.worker, services.media
        first, last = work[0].first_image, work[0].last_image or b""
        refs = {image: media.put_frame(image, "image/png")[0] for image in (first, last)}  # checked: flat_png

        async def submit(draft: Draft) -> None:
            await jobs_service.submit(draft)

        async def admit(draft: Draft) -> None:
            new_job = NewJob(
                guild_id=draft.guild_id, channel_id=draft.channel_id, user_id=draft.user_id, locale=draft.locale,
                request=jobs_service.check_text(draft.request), first_frame=refs[draft.first_image],
                last_frame=refs[draft.last_image or b""],
            )  # fmt: skip
            worker.enqueue(await budget.admit(new_job))

        enqueue_s = await concurrently(submit, work[:half])
        admit_s = await concurrently(admit, work[half:])
        assert len(services.scheduler.queue) == n

        started = time.perf_counter()
        services.scheduler.queue.positions()
        positions_ms = (time.perf_counter() - started) * 1000

        free, blocked = time_decisions(services, min(2_000, n // 4), min(500, n // 40))
        await services.stop()
        del services
        gc.collect()

        started = time.perf_counter()
        restarted = await build_services(settings, RecordingNotifier())
        await restarted.jobs.load_pause_state()
        await restarted.worker.recover()
        recovery_s = time.perf_counter() - started
        rebuilt = len(restarted.scheduler.queue)
        gc.collect()
        resident = rss_mb()
        await restarted.stop()
        decisions = free + blocked
        return {
            "bench": "scale",
            "size": size,
            "jobs": n,
            "guilds": guilds,
            "enqueue_per_s": round(half / enqueue_s, 1),
            "admit_per_s": round((n - half) / admit_s, 1),
            "dispatch_p99_ms": r3(percentile(decisions, 99)),
            "dispatch_p50_ms": r3(percentile(decisions, 50)),
            "dispatch_max_ms": r3(max(decisions)),
            "dispatch_blocked_p99_ms": r3(percentile(blocked, 99)),
            "decisions": len(decisions),
            "rss_mb": round(resident, 1),
            "rss_peak_mb": round(peak_rss_mb(), 1),
            "recovery_s": r3(recovery_s),
            "recovered_jobs": rebuilt,
            "positions_ms": r3(positions_ms),
        }
