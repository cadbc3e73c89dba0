"""admission: jobs admitted per second through the whole path on SQLite and on PostgreSQL, and the dispatch
decision with a 10,000-job backlog on each.

Per engine, in one process, on a fresh database (PostgreSQL: created for the run on KF2V_BENCH_DATABASE_URL's
server, default the local one, and dropped after; unreachable: that half is skipped and says why, except
with CI=true, where the bench fails):

* enqueue_per_s: `jobs` requests through JobService.submit, 32 submitters at once: rate limit, text, content
  rules, channel and budget prechecks, both frames fully checked (sniff, header, full Pillow decode) and
  stored, the budget decision and the job row in one transaction, the in-memory fair queue. Every job
  brings its OWN two 320x240 PNGs (no two uploads alike), so each job pays for two decodes and two new
  files; `scale` measures the same path with one pair of frames shared by every job.
* admit_per_s (extra): the backlog filled up to `queued` jobs with BudgetService.admit + Worker.enqueue
  alone (frames checked and stored once): the admission transaction without the image work.
* dispatch_p99_ms: with that backlog, what the dispatcher does to decide and claim the next job: the fair
  queue's pick (Scheduler.next_dispatch), then the job read and its QUEUED -> SUBMITTING write, which on
  PostgreSQL is fenced (the lease epoch checked in the same transaction, as a real dispatcher's is).
  pick_p99_ms (extra): the pick alone, in memory. Lanes are freed after each decision so none waits for
  a slot; the clock steps 0.6 s per decision so the rate window never blocks one either.

Invariants reported for tests/project/test_bench.py: every job queued in the database and in memory, every
reservation in the ledger, exactly `decisions` jobs claimed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench._common import FLASH, PLUS, bench_settings, flat_png, note, percentile, r3
from bench.scale import NOWHERE, SUBMITTERS, USERS_PER_GUILD
from bot.app import Services, build_services
from bot.jobs.db import redact_url
from bot.jobs.models import JobRequest, JobState, NewJob
from bot.jobs.service import Draft
from bot.jobs.worker.lease import DispatchLease
from tests.support.recording import RecordingNotifier

DEFAULTS = {
    "tiny": {"jobs": 120, "queued": 300, "decisions": 100, "guilds": 30},
    "full": {"jobs": 3_000, "queued": 10_000, "decisions": 1_000, "guilds": 1_000},
}
ENGINES = ("sqlite", "postgresql")
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
DISPATCH_TARGET_MS = 5.0
ENQUEUE_TARGET_PER_S = 500.0
T = TypeVar("T")


def who_and_what(i: int, guilds: int) -> tuple[int, int, JobRequest]:
    """Job number i's guild, member and request (10 % plus at 720P): spread as in `scale`."""
    guild = 20_000 + i % guilds
    plus = i % 10 == 9
    request = JobRequest(
        prompt=f"admission job {i}: a square changes colour",
        model=PLUS if plus else FLASH,
        resolution="720P" if plus else "480P",
    )
    return guild, guild * 100 + (i // guilds) % USERS_PER_GUILD, request


def distinct_drafts(jobs: int, guilds: int) -> list[Draft]:
    """`jobs` requests, each with its own pair of frames (colours from the job's number: no two alike)."""
    out = []
    for i in range(jobs):
        guild, user, request = who_and_what(i, guilds)
        shade = (i % 250, (i // 250) % 250, 40)
        first, last = flat_png(colour=shade), flat_png(colour=(shade[1], shade[0], 200))
        draft = Draft(
            guild_id=guild, channel_id=guild * 10, user_id=user, locale="en-US", request=request,
            first_image=first, last_image=last,
        )  # fmt: skip
        out.append(draft)
    return out


async def concurrently(step: Callable[[T], Awaitable[object]], items: Sequence[T]) -> float:
    """Seconds to run `step` over `items` with SUBMITTERS at once (members acting at the same time)."""
    pending = iter(items)

    async def submitter() -> None:
        for item in pending:  # one shared iterator: each item taken once
            await step(item)

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
    return time.perf_counter() - started


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str | None]:
    """A fresh database's URL on the bench server (dropped after), or None when no server answers."""
    server = os.environ.get("KF2V_BENCH_DATABASE_URL") or DEFAULT_SERVER
    try:
        admin = await asyncpg.connect(server, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError(f"CI=true but no PostgreSQL server at {redact_url(server)}: {exc}") from exc
        note(f"admission: PostgreSQL half skipped: no server at {redact_url(server)} ({type(exc).__name__})")
        yield None
        return
    name = f"kf2v_bench_admission_{os.getpid()}_{secrets.token_hex(3)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _count(services: Services, sql: str, params: tuple[Any, ...] = ()) -> int:
    row = await services.store.database.fetch_one(sql, params)
    return int(row[0]) if row is not None and row[0] is not None else 0  # PostgreSQL sums come as Decimal


async def time_dispatch(services: Services, decisions: int) -> tuple[list[float], list[float]]:
    """Milliseconds per decision (pick + read + SUBMITTING write) and per pick alone."""
    scheduler, store = services.scheduler, services.store
    limits = scheduler.limits
    now = time.monotonic()
    whole: list[float] = []
    pick: list[float] = []
    for _ in range(decisions):
        started = time.perf_counter()
        picked = scheduler.next_dispatch(now)
        picked_at = time.perf_counter()
        assert picked is not None
        queued, account = picked
        limits.begin_submit(account, queued.model, queued.job_id, now)
        current = await store.get(queued.job_id)
        assert current is not None and current.state is JobState.QUEUED
        await store.transition(
            queued.job_id, JobState.SUBMITTING, expect=JobState.QUEUED, account=account, attempts=current.attempts + 1
        )
        done = time.perf_counter()
        whole.append((done - started) * 1000)
        pick.append((picked_at - started) * 1000)
        limits.end_submit(account, queued.job_id)
        limits.release(account, queued.model, queued.job_id)
        now += 0.6
    return whole, pick


async def run_engine(engine: str, data: Path, url: str | None, sizes: dict[str, int]) -> dict[str, Any]:
    jobs, queued, decisions, guilds = sizes["jobs"], sizes["queued"], sizes["decisions"], sizes["guilds"]
    overrides: dict[str, Any] = {"KF2V_DATABASE_URL": url} if url else {}
    settings = bench_settings(data, NOWHERE, **overrides)
    services = await build_services(settings, RecordingNotifier())
    try:
        assert services.store.dialect == engine
        lease = None
        if engine == "postgresql":  # as a dispatching process: its SUBMITTING writes are fenced by the lease
            accounts = sorted(services.worker.clients) or ["none"]
            lease = DispatchLease(services.store.database, accounts, f"bench-{os.getpid()}", ttl=3_600)
            assert await lease.acquire()
            services.store.fence_for = lease.fence_for
        note(f"admission/{engine}: {jobs} jobs through JobService.submit")
        work = distinct_drafts(jobs, guilds)
        jobs_service = services.jobs

        async def submit(draft: Draft) -> None:
            await jobs_service.submit(draft)

        enqueue_s = await concurrently(submit, work)

        note(f"admission/{engine}: backlog to {queued} with the admission alone")
        first, last = flat_png(colour=(1, 2, 3)), flat_png(colour=(3, 2, 1))
        first_ref, last_ref = (
            services.media.put_frame(first, "image/png")[0],
            services.media.put_frame(last, "image/png")[0],
        )
        fill = []
        for i in range(jobs, max(jobs, queued)):
            guild, user, request = who_and_what(i, guilds)
            fill.append(
                NewJob(
                    guild_id=guild, channel_id=guild * 10, user_id=user, locale="en-US",
                    request=jobs_service.check_text(request), first_frame=first_ref, last_frame=last_ref,
                )
            )  # fmt: skip

        async def admit(new_job: NewJob) -> None:
            services.worker.enqueue(await services.budget.admit(new_job))

        admit_s = await concurrently(admit, fill) if fill else 0.0
        in_memory = len(services.scheduler.queue)
        in_database = await _count(services, "SELECT COUNT(*) FROM jobs WHERE state = ?", (JobState.QUEUED.value,))
        reserved = await _count(services, "SELECT SUM(cost_reserved) FROM jobs")
        ledger = await _count(services, "SELECT SUM(amount) FROM ledger WHERE kind = ?", ("reserve",))

        note(f"admission/{engine}: {decisions} dispatch decisions with {in_memory} queued")
        whole, pick = await time_dispatch(services, decisions)
        claimed = await _count(services, "SELECT COUNT(*) FROM jobs WHERE state = ?", (JobState.SUBMITTING.value,))
        if lease is not None:
            await lease.release()
    finally:
        await services.stop()
    return {
        f"{engine}_enqueue_per_s": round(jobs / enqueue_s, 1),
        f"{engine}_admit_per_s": round(len(fill) / admit_s, 1) if admit_s else None,
        f"{engine}_dispatch_p50_ms": r3(percentile(whole, 50)),
        f"{engine}_dispatch_p99_ms": r3(percentile(whole, 99)),
        f"{engine}_dispatch_max_ms": r3(max(whole)),
        f"{engine}_pick_p99_ms": r3(percentile(pick, 99)),
        f"{engine}_queued_in_memory": in_memory,
        f"{engine}_queued_in_database": in_database,
        f"{engine}_reserved_equals_ledger": reserved == ledger and reserved > 0,
        f"{engine}_claimed": claimed,
    }


async def measure(size: str, *, jobs: int | None = None, seed: int = 3, **_options: Any) -> dict[str, Any]:
    sizes = dict(DEFAULTS[size])
    if jobs is not None:
        sizes["jobs"] = jobs
        sizes["queued"] = max(sizes["queued"], jobs)
    sizes["decisions"] = min(sizes["decisions"], sizes["queued"])
    figures: dict[str, Any] = {"bench": "admission", "size": size, **sizes, "engines": []}
    with tempfile.TemporaryDirectory(prefix="kf2v-bench-") as tmp:
        figures.update(await run_engine("sqlite", Path(tmp) / "sqlite", None, sizes))
        figures["engines"].append("sqlite")
        async with postgres_database() as url:
            if url is None:
                figures["postgresql_skipped"] = "no PostgreSQL server reachable"
            else:
                figures.update(await run_engine("postgresql", Path(tmp) / "postgresql", url, sizes))
                figures["engines"].append("postgresql")
    if "postgresql_enqueue_per_s" in figures:
        figures["postgresql_vs_sqlite_enqueue"] = r3(
            figures["postgresql_enqueue_per_s"] / figures["sqlite_enqueue_per_s"]
        )
    figures["enqueue_target_per_s"] = ENQUEUE_TARGET_PER_S
    figures["dispatch_target_ms"] = DISPATCH_TARGET_MS
    return figures
