from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bot.health import HealthServer, Metrics
from bot.jobs.models import GuildPolicy, GuildUsage, Job, JobRequest, JobState, NewJob
from bot.jobs.scheduler import AccountLimits, QueuedJob, Scheduler
from bot.jobs.store import JobStore
from bot.settings import load_settings

FLASH = "wan2.2-kf2v-flash"
PLUS = "wanx2.1-kf2v-plus"


class FakeWorker:
    def __init__(self) -> None:
        self.counters = {"submissions": 7, "throttled": 2, "polls": 40, "provider_errors": 3}
        self.errors_by_code = {"Throttling.RateQuota": 2, "InternalError": 1}


def _admit(usage: GuildUsage, policy: GuildPolicy) -> None:
    return None


async def _job(store: JobStore, guild_id: int, user_id: int, model: str = FLASH, cost: int = 1000) -> Job:
    new_job = NewJob(
        guild_id=guild_id,
        channel_id=guild_id * 10,
        user_id=user_id,
        locale="en-US",
        request=JobRequest(model=model, resolution="720P", prompt="a cat walks"),
        first_frame="a" * 64 + ".png",
        last_frame="b" * 64 + ".png",
    )
    return await store.create_job(new_job, cost=cost, period_day="2025-01-01", period_month="2025-01", admit=_admit)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    s = await JobStore.open(tmp_path / "data" / "kf2v.sqlite3")
    yield s
    await s.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def _scheduler() -> Scheduler:
    return Scheduler(AccountLimits(["acct-1111", "acct-2222"], {FLASH: (2, 2.0), PLUS: (2, 2.0)}))


def _families(text: str) -> dict[str, list[Sample]]:
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {name} {labels} in {samples}")


async def test_healthz_ok_and_503_with_failing_parts(store: JobStore, http: aiohttp.ClientSession) -> None:
    worker_alive = True

    async def gateway() -> bool:
        return True

    def worker() -> bool:
        return worker_alive

    async def broken() -> bool:
        raise RuntimeError("boom")

    server = HealthServer(
        Metrics(store), {"database": store.ping, "gateway": gateway, "worker": worker}, "127.0.0.1", 0
    )
    url = await server.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        async with http.get(f"{url}/healthz") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/json"
            assert await resp.json() == {"status": "ok", "database": True, "gateway": True, "worker": True}

        worker_alive = False
        async with http.get(f"{url}/healthz") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body == {
            "status": "unavailable",
            "database": True,
            "gateway": True,
            "worker": False,
            "failing": ["worker"],
        }
    finally:
        await server.stop()

    # A check that raises or hangs counts as failing, and a plain bool is accepted too.
    async def hangs() -> bool:
        await asyncio.sleep(10)
        return True

    server = HealthServer(
        Metrics(), {"database": broken, "gateway": False, "worker": hangs}, "127.0.0.1", 0, check_timeout=0.2
    )
    url = await server.start()
    try:
        async with http.get(f"{url}/healthz") as resp:
            assert resp.status == 503
            assert (await resp.json())["failing"] == ["database", "gateway", "worker"]
    finally:
        await server.stop()


async def test_metrics_families_from_real_store_and_scheduler(store: JobStore, http: aiohttp.ClientSession) -> None:
    scheduler = _scheduler()
    # Guild 1: two queued jobs (two users); guild 2: one queued; one job settled (spent) in guild 2.
    queued = [await _job(store, 1, 11), await _job(store, 1, 12), await _job(store, 2, 21)]
    for job in queued:
        scheduler.queue.push(QueuedJob.of(job))
    done = await _job(store, 2, 22, cost=1000)
    await store.transition(done.id, JobState.SUBMITTING, account="acct-1111")
    await store.transition(done.id, JobState.PENDING, task_id="t-1")
    await store.transition(done.id, JobState.SUCCEEDED, settle=1000)
    running = await _job(store, 3, 31, model=PLUS)
    await store.transition(running.id, JobState.SUBMITTING, account="acct-2222")
    scheduler.limits.begin_submit("acct-2222", PLUS, running.id, 0.0)

    metrics = Metrics(store, scheduler, FakeWorker())
    now = datetime.now(UTC)
    submitted = dataclasses.replace(done, created_at=now - timedelta(seconds=42), submitted_at=now)
    metrics.observe_job("submitted", submitted)
    finished = dataclasses.replace(submitted, finished_at=now + timedelta(seconds=200))
    metrics.observe_job("succeeded", finished)
    metrics.observe_job("weird-event", finished)  # unknown events are counted as "other", never raise

    server = HealthServer(metrics, {"database": store.ping}, "127.0.0.1", 0)
    url = await server.start()
    try:
        async with http.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await resp.text()
    finally:
        await server.stop()

    fam = _families(text)
    for name in (
        "kf2v_jobs",
        "kf2v_queue_jobs",
        "kf2v_queue_guilds",
        "kf2v_queue_max_guild_depth",
        "kf2v_provider_tasks_in_flight",
        "kf2v_provider_submissions",
        "kf2v_provider_throttles",
        "kf2v_provider_polls",
        "kf2v_provider_errors",
        "kf2v_job_wait_seconds",
        "kf2v_job_run_seconds",
        "kf2v_job_events",
        "kf2v_guild_spend_cny",
        "kf2v_store_up",
    ):
        assert name in fam, f"{name} missing from /metrics"

    assert _value(fam["kf2v_jobs"], "kf2v_jobs", state="queued") == 3
    assert _value(fam["kf2v_jobs"], "kf2v_jobs", state="succeeded") == 1
    assert _value(fam["kf2v_jobs"], "kf2v_jobs", state="submitting") == 1
    assert _value(fam["kf2v_jobs"], "kf2v_jobs", state="delivered") == 0
    assert _value(fam["kf2v_queue_jobs"], "kf2v_queue_jobs") == 3
    assert _value(fam["kf2v_queue_guilds"], "kf2v_queue_guilds") == 2
    assert _value(fam["kf2v_queue_max_guild_depth"], "kf2v_queue_max_guild_depth") == 2
    assert _value(fam["kf2v_provider_tasks_in_flight"], "kf2v_provider_tasks_in_flight", account="acct-2222") == 1
    assert _value(fam["kf2v_provider_submissions"], "kf2v_provider_submissions_total") == 7
    assert _value(fam["kf2v_provider_throttles"], "kf2v_provider_throttles_total") == 2
    assert _value(fam["kf2v_provider_errors"], "kf2v_provider_errors_total", code="Throttling.RateQuota") == 2
    assert _value(fam["kf2v_guild_spend_cny"], "kf2v_guild_spend_cny", guild="2") == pytest.approx(1.0)
    assert _value(fam["kf2v_store_up"], "kf2v_store_up") == 1
    assert _value(fam["kf2v_job_wait_seconds"], "kf2v_job_wait_seconds_count", model=FLASH) == 1
    assert _value(fam["kf2v_job_wait_seconds"], "kf2v_job_wait_seconds_sum", model=FLASH) == pytest.approx(42)
    assert _value(fam["kf2v_job_wait_seconds"], "kf2v_job_wait_seconds_bucket", model=FLASH, le="30.0") == 0
    assert _value(fam["kf2v_job_wait_seconds"], "kf2v_job_wait_seconds_bucket", model=FLASH, le="60.0") == 1
    assert _value(fam["kf2v_job_run_seconds"], "kf2v_job_run_seconds_sum", model=FLASH) == pytest.approx(200)
    assert _value(fam["kf2v_job_events"], "kf2v_job_events_total", event="submitted") == 1
    assert _value(fam["kf2v_job_events"], "kf2v_job_events_total", event="other") == 1
    assert _value(fam["kf2v_job_events"], "kf2v_job_events_total", event="delivered") == 0

    # Scrapes read the store each time: new jobs show up in the next scrape.
    await _job(store, 4, 41)
    fam = _families((await metrics.render()).decode())
    assert _value(fam["kf2v_jobs"], "kf2v_jobs", state="queued") == 4


async def test_metrics_without_sources_and_with_a_broken_store() -> None:
    class BrokenStore:
        async def count_by_state(self) -> dict[JobState, int]:
            raise OSError("disk gone")

        async def spend_by_guild(self) -> dict[int, int]:
            return {}

    fam = _families((await Metrics().render()).decode())
    assert _value(fam["kf2v_queue_jobs"], "kf2v_queue_jobs") == 0
    assert _value(fam["kf2v_provider_submissions"], "kf2v_provider_submissions_total") == 0

    fam = _families((await Metrics(BrokenStore()).render()).decode())
    assert _value(fam["kf2v_store_up"], "kf2v_store_up") == 0

    # Each Metrics has its own registry: building many never collides.
    first, second = Metrics(), Metrics()
    assert first.registry is not second.registry


def test_from_settings_is_off_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KF2V_HTTP_PORT", raising=False)
    monkeypatch.delenv("KF2V_HTTP_HOST", raising=False)
    assert HealthServer.from_settings(load_settings(), Metrics(), {}) is None
    server = HealthServer.from_settings(load_settings(http_port=9321), Metrics(), {"worker": True})
    assert server is not None
    assert (server.host, server.port) == ("127.0.0.1", 9321)
