from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.catalog import load_catalog
from bot.errors import QueueFull, QuotaExceeded
from bot.jobs.models import IllegalTransition, JobRequest, JobState, NewJob
from bot.jobs.quota import BudgetService, Defaults
from bot.jobs.store import JobStore, StaleState
from bot.ops import latest_migration
from tests.support.postgres import OpenDatabase

ZONE = __import__("zoneinfo").ZoneInfo


def request(guild: int = 1, user: int = 10, model: str = "wan2.2-kf2v-flash", resolution: str = "720P") -> NewJob:
    options = JobRequest(model=model, resolution=resolution, prompt="hello'); DROP TABLE jobs; -- @everyone", seed=7)
    return NewJob(
        guild_id=guild, channel_id=5, user_id=user, locale="en-US", request=options,
        first_frame="ab/ab.png", last_frame="cd/cd.png",
    )  # fmt: skip


@pytest.fixture
async def store(open_database_of_engine: OpenDatabase) -> JobStore:
    """The store on each engine (tests/support/postgres.py): a SQLite file, or a fresh PostgreSQL schema."""
    return JobStore(await open_database_of_engine())  # the fixture closes what it opened


def budget(store: JobStore, daily: int = 10_000, monthly: int = 100_000, videos: int = 1000, queue: int = 1000,
           tz: str = "UTC", region: str = "beijing") -> BudgetService:  # fmt: skip
    return BudgetService(store, load_catalog(), Defaults(daily, monthly, videos, queue), ZONE(tz), region=region)


async def test_database_is_private_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "data" / "kf2v.sqlite3"
    store = await JobStore.open(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert await store.schema_version() == latest_migration()
    again = await JobStore.open(path)  # reopening applies nothing twice
    assert await again.schema_version() == latest_migration()
    await again.close()
    await store.close()


async def test_both_engines_migrate_to_the_same_version(open_database_of_engine: OpenDatabase) -> None:
    first = JobStore(await open_database_of_engine())
    assert await first.schema_version() == first.latest_schema_version() == latest_migration()
    second = JobStore(await open_database_of_engine())  # another process: finds everything applied
    assert await second.schema_version() == latest_migration()
    assert first.describe().split()[0] == {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[first.dialect]


async def test_admissions_from_three_processes_never_overspend(postgres_url: str) -> None:
    """200 simultaneous admissions into one guild's budget through three stores, each with its own pool
    (what three bot processes have), while other guilds admit too: exactly what fits is admitted."""
    stores = [await JobStore.open_url(postgres_url) for _ in range(3)]
    try:
        fits = 37  # 720P flash costs 1 CNY (1000 milli-CNY): a 37 CNY day takes 37 videos
        services = [budget(s, daily=fits * 1000) for s in stores]
        crowded = [services[i % 3].admit(request(guild=1, user=i)) for i in range(200)]
        elsewhere = [services[i % 3].admit(request(guild=2 + i % 3, user=i)) for i in range(30)]
        results = await asyncio.gather(*crowded, *elsewhere, return_exceptions=True)
        into_one, into_others = results[:200], results[200:]
        unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, QuotaExceeded)]
        assert unexpected == []
        assert sum(not isinstance(r, BaseException) for r in into_one) == fits
        assert sum(isinstance(r, QuotaExceeded) for r in into_one) == 200 - fits
        assert all(not isinstance(r, BaseException) for r in into_others)
        report = await services[0].report(1)
        assert report.usage.reserved_day == fits * 1000 and report.left_day == 0
        reserved = [e for e in await stores[1].ledger(1) if e.kind == "reserve"]
        assert len(reserved) == fits and sum(e.amount for e in reserved) == fits * 1000
        jobs = await stores[2].all_jobs()
        assert len(jobs) == fits + 30
        # Different guilds hold different locks: the queue order key must still be unique.
        assert len({j.queue_seq for j in jobs}) == len(jobs)
    finally:
        for s in stores:
            await s.close()


async def test_hundred_simultaneous_reservations_accept_exactly_what_fits(store: JobStore) -> None:
    # 720P flash costs 1 CNY; a 10 CNY daily budget takes exactly ten.
    service = budget(store, daily=10_000)
    results = await asyncio.gather(*(service.admit(request(user=i)) for i in range(100)), return_exceptions=True)
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(accepted) == 10 and len(refused) == 90
    report = await service.report(1)
    assert report.usage.reserved_day == 10_000 and report.left_day == 0
    assert refused[0].key == "quota.daily" and refused[0].params["left"] == "0.00"


async def test_settle_release_and_ledger_balance(store: JobStore) -> None:
    service = budget(store)
    a, b, c = [await service.admit(request(user=i)) for i in range(3)]
    for job in (a, b):
        await store.transition(job.id, JobState.SUBMITTING, account="acct")
        await store.transition(job.id, JobState.PENDING, task_id=f"t{job.id}")
    await store.transition(a.id, JobState.SUCCEEDED, settle=service.actual_cost(a, 5))
    await store.transition(b.id, JobState.FAILED, release=True, error_key="job.failed.content")
    await store.transition(c.id, JobState.CANCELED, release=True)
    with pytest.raises(Exception, match="money moves once"):
        await store.transition(a.id, JobState.DELIVERED, settle=1000)
    ledger = await store.ledger()
    assert [(e.job_id, e.kind) for e in ledger] == [
        (a.id, "reserve"), (b.id, "reserve"), (c.id, "reserve"), (a.id, "settle"), (b.id, "release"),
        (c.id, "release"),
    ]  # fmt: skip
    report = await service.report(1)
    assert report.usage.spent_day == 1000 and report.usage.reserved_day == 0


@pytest.mark.parametrize("region", ["beijing", "singapore"])
async def test_a_job_reserves_and_settles_at_its_regions_price(store: JobStore, region: str) -> None:
    """wan2.7-i2v costs more per second in Singapore: both the reservation and the settlement use the price of
    the region the job is sent to (issue 18: Singapore was budgeted at Beijing's)."""
    service = budget(store, daily=1_000_000, region=region)
    spec = load_catalog().model("wan2.7-i2v")
    per_second = spec.region_price_per_second_milli.get(region, spec.price_per_second_milli)["1080P"]
    assert spec.region_price_per_second_milli["singapore"]["1080P"] > spec.price_per_second_milli["1080P"]
    options = JobRequest(model="wan2.7-i2v", resolution="1080P", prompt="a wave", duration=8)
    new = NewJob(guild_id=1, channel_id=5, user_id=10, locale="en-US", request=options, first_frame="ab/ab.png",
                 last_frame=None)  # fmt: skip
    job = await service.admit(new)
    assert job.cost_reserved == 8 * per_second
    await store.transition(job.id, JobState.SUBMITTING, account="acct")
    await store.transition(job.id, JobState.PENDING, task_id=f"t{job.id}")
    settled = service.actual_cost(job, 6.5)  # billed 6.5 s of the 8 reserved
    assert settled == -(-13 * per_second // 2)  # rounded up to a whole milli-yuan
    await store.transition(job.id, JobState.SUCCEEDED, settle=settled)
    report = await service.report(1)
    assert report.usage.spent_day == settled and report.usage.reserved_day == 0


async def test_illegal_and_stale_transitions_raise(store: JobStore) -> None:
    job = await budget(store).admit(request())
    with pytest.raises(IllegalTransition):
        await store.transition(job.id, JobState.DELIVERED)
    with pytest.raises(StaleState):
        await store.transition(job.id, JobState.CANCELED, expect=JobState.PENDING)


async def test_member_limits_and_queue_limit(store: JobStore) -> None:
    service = budget(store, videos=2, queue=5)
    await service.admit(request(user=1))
    await service.admit(request(user=1))
    with pytest.raises(QuotaExceeded) as info:
        await service.admit(request(user=1))
    assert info.value.key == "quota.member_daily"
    queue_limited = budget(store, queue=2)
    await queue_limited.admit(request(user=2))
    await queue_limited.admit(request(user=2))
    with pytest.raises(QueueFull):
        await queue_limited.admit(request(user=2))


async def test_periods_follow_the_configured_zone(store: JobStore) -> None:
    moment = datetime(2026, 1, 31, 17, 30, tzinfo=UTC)  # already Feb 1st in Shanghai
    shanghai = budget(store, tz="Asia/Shanghai").periods(moment)
    assert (shanghai.day, shanghai.month) == ("2026-02-01", "2026-02")
    assert shanghai.day_resets_at.isoformat() == "2026-02-02T00:00:00+08:00"
    utc = budget(store).periods(moment)
    assert (utc.day, utc.month) == ("2026-01-31", "2026-01")
    assert utc.month_resets_at.isoformat() == "2026-02-01T00:00:00+00:00"


async def test_prompts_are_stored_verbatim(store: JobStore) -> None:
    job = await budget(store).admit(request())
    again = await store.get(job.id)
    assert again is not None and again.request.prompt == "hello'); DROP TABLE jobs; -- @everyone"


async def test_manager_limits_never_touch_budgets(store: JobStore) -> None:
    service = budget(store)
    await service.set_budgets(1, daily=5000, monthly=None)
    policy = await service.set_member_limits(1, member_daily_videos=3, allowed_channels=(42,))
    assert policy.daily_budget == 5000 and policy.member_daily_videos == 3 and policy.allowed_channels == (42,)


async def test_simultaneous_variation_batches_are_reserved_whole_or_refused_whole(store: JobStore) -> None:
    # Issue 19: ten batches of three 1-CNY variations against a 10-CNY day: three batches fit (nine videos),
    # never a part of a fourth; every job of a batch is a job of its own, reserved at the single price.
    service = budget(store, daily=10_000)
    batches = [[request(user=u)] * 3 for u in range(10)]
    results = await asyncio.gather(*(service.admit_batch(b) for b in batches), return_exceptions=True)
    accepted = [r for r in results if isinstance(r, list)]
    assert len(accepted) == 3 and sum(isinstance(r, QuotaExceeded) for r in results) == 7, results
    assert all(len(jobs) == 3 and {j.user_id for j in jobs} == {jobs[0].user_id} for jobs in accepted)
    assert all(j.cost_reserved == 1000 for jobs in accepted for j in jobs)
    report = await service.report(1)
    assert report.usage.reserved_day == 9_000 and len(await store.all_jobs()) == 9
    # The member limits count every video of a batch: two left today refuse a batch of three, whole.
    limited = budget(store, daily=100_000, videos=2)
    with pytest.raises(QuotaExceeded) as refused:
        await limited.admit_batch([request(guild=2)] * 3)
    assert refused.value.key == "quota.batch_member_daily" and refused.value.params["left"] == 2
    assert len(await limited.admit_batch([request(guild=2)] * 2)) == 2
