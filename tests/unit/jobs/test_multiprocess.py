"""Several engines on one PostgreSQL database (issue 14): one dispatcher, the others standbys that admit jobs,
and job changes heard across them through LISTEN/NOTIFY. Each engine is what `kf2v-bot run` builds (its own
pool, lease, worker and notifier); the DashScope emulator over loopback is the only thing faked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.app import Services
from bot.jobs.models import JobState
from bot.jobs.service import Actor
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support.engine import draft, start_engine
from tests.support.recording import RecordingNotifier
from tests.support.waiting import wait_until

FAST = {"pending_s": (0.05, 0.2), "running_s": (0.2, 0.5)}
Engine = tuple[Services, RecordingNotifier]
StartEngines = Callable[[int], Awaitable[list[Engine]]]


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(seed=14, **FAST))  # type: ignore[arg-type]
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
async def start_engines(tmp_path: Path, postgres_url: str, emulator: DashScopeEmulator) -> AsyncIterator[StartEngines]:
    """Engines sharing the database and the data folder (the shared volume of a multi-host install)."""
    started: list[Services] = []

    async def start(count: int) -> list[Engine]:
        engines = []
        for _ in range(count):
            services, recorder = await start_engine(
                tmp_path, emulator.base_url, RecordingNotifier(), KF2V_DATABASE_URL=postgres_url
            )
            started.append(services)
            engines.append((services, recorder))
        await wait_until(lambda: sum(s.worker.alive for s, _ in engines) == 1, within=15)
        return engines

    yield start
    for services in started:
        if not services.http.closed:  # a test may have stopped one already
            await services.stop()


def holder_of(engines: list[Engine]) -> tuple[Engine, list[Engine]]:
    holders = [engine for engine in engines if engine[0].worker.alive]
    assert len(holders) == 1, "exactly one process dispatches"
    return holders[0], [engine for engine in engines if engine is not holders[0]]


async def state_of(services: Services, job_id: int) -> JobState:
    job = await services.store.get(job_id)
    assert job is not None
    return job.state


async def test_one_dispatcher_submits_and_delivers_what_standbys_admit(
    start_engines: StartEngines, emulator: DashScopeEmulator
) -> None:
    engines = await start_engines(3)
    (holder, holder_notes), standbys = holder_of(engines)
    assert all(services.standby for services, _ in standbys)

    admitted = [await services.jobs.submit(draft(user=10 + i)) for i, (services, _) in enumerate(engines)]
    await wait_until(
        lambda: all_delivered(holder, [job.id for job in admitted]),
        within=30,
    )

    assert emulator.stats()["submissions_accepted"] == len(admitted), "each job submitted once"
    assert sorted(job_id for job_id, _ in holder_notes.delivered) == sorted(job.id for job in admitted)
    for services, notes in standbys:
        assert services.worker.counters["submissions"] == 0, "a standby never submits"
        assert notes.delivered == [], "only the dispatcher posts results"
    # The standbys' jobs reached the dispatcher's queue by notification, not by a restart's recovery.
    assert holder.follower is not None and holder.follower.applied >= len(standbys)


async def all_delivered(services: Services, job_ids: list[int]) -> bool:
    return all([await state_of(services, job_id) is JobState.DELIVERED for job_id in job_ids])


async def test_cancel_on_a_standby_drops_the_job_from_the_dispatchers_queue(
    start_engines: StartEngines, emulator: DashScopeEmulator
) -> None:
    engines = await start_engines(3)
    (holder, _), [(admitting, _), (cancelling, cancel_notes)] = holder_of(engines)
    await holder.jobs.pause("maintenance")  # the dispatcher holds its queue: the job stays QUEUED

    job = await admitting.jobs.submit(draft())
    await wait_until(lambda: job.id in holder.worker.scheduler.queue, within=10)
    # A third process mirrors the queue too: the position it shows counts everyone's jobs.
    await wait_until(lambda: cancelling.jobs.queue_positions().get(job.id) == 1, within=10)

    canceled = await cancelling.jobs.cancel(job.id, Actor(user_id=job.user_id))
    assert canceled.state is JobState.CANCELED
    await wait_until(lambda: job.id not in holder.worker.scheduler.queue, within=10)
    await holder.jobs.resume()

    later = await admitting.jobs.submit(draft(user=11))
    await wait_until(lambda: all_delivered(holder, [later.id]), within=30)
    assert await state_of(holder, job.id) is JobState.CANCELED
    assert emulator.stats()["submissions_accepted"] == 1, "the cancelled job never reached the provider"
    assert cancel_notes.failed == [(job.id, "job.canceled")]


async def test_cancel_of_a_pending_job_on_a_standby_asks_the_provider(
    start_engines: StartEngines, emulator: DashScopeEmulator
) -> None:
    emulator.update(pending_s=(30.0, 30.0))  # the provider keeps the task queued until it is cancelled
    engines = await start_engines(2)
    (holder, _), [(standby, _)] = holder_of(engines)

    job = await standby.jobs.submit(draft())
    await wait_until(lambda: state_is(standby, job.id, JobState.PENDING), within=15)
    await standby.jobs.cancel(job.id, Actor(user_id=job.user_id))

    await wait_until(lambda: state_is(holder, job.id, JobState.CANCELED), within=15)
    assert emulator.stats()["cancels"] == 1
    final = await holder.store.get(job.id)
    assert final is not None and final.charge_state.value == "released"


async def state_is(services: Services, job_id: int, state: JobState) -> bool:
    return await state_of(services, job_id) is state


async def test_a_pause_and_resume_on_a_standby_reach_the_dispatcher(
    start_engines: StartEngines, emulator: DashScopeEmulator
) -> None:
    engines = await start_engines(2)
    (holder, _), [(standby, _)] = holder_of(engines)
    await standby.jobs.pause("maintenance", guild_id=1)  # an owner's command handled by the standby
    await wait_until(lambda: holder.jobs.pause_for(1) is not None, within=10)
    held = holder.jobs.pause_for(1)
    assert held is not None and held.reason == "maintenance"

    job = await standby.jobs.submit(draft(guild=1))
    other = await standby.jobs.submit(draft(guild=2, user=11))
    await wait_until(lambda: all_delivered(holder, [other.id]), within=30)
    assert await state_of(holder, job.id) is JobState.QUEUED, "the paused guild's job waits"

    await standby.jobs.resume(guild_id=1)
    await wait_until(lambda: holder.jobs.pause_for(1) is None, within=10)
    await wait_until(lambda: all_delivered(holder, [job.id]), within=30)
    assert emulator.stats()["submissions_accepted"] == 2


async def test_a_stopped_dispatcher_hands_over_and_the_next_one_finishes_its_jobs(
    start_engines: StartEngines, emulator: DashScopeEmulator
) -> None:
    engines = await start_engines(2)
    (holder, _), [(standby, standby_notes)] = holder_of(engines)
    await holder.jobs.pause("deploy")
    jobs = [await standby.jobs.submit(draft(user=20 + i)) for i in range(3)]
    await wait_until(lambda: all(job.id in holder.worker.scheduler.queue for job in jobs), within=10)

    await standby.jobs.resume()  # lifts the stored pause; the holder, about to stop, keeps its own
    await holder.stop()  # a rolling deploy: the leases are released and the standby told at once
    await wait_until(lambda: standby.worker.alive, within=15)
    await wait_until(lambda: all_delivered(standby, [job.id for job in jobs]), within=30)
    assert emulator.stats()["submissions_accepted"] == len(jobs)
    assert sorted(job_id for job_id, _ in standby_notes.delivered) == sorted(job.id for job in jobs)


async def test_a_holder_whose_lease_was_taken_over_stops_dispatching(
    start_engines: StartEngines, postgres_url: str
) -> None:
    engines = await start_engines(2)
    (holder, _), [(standby, _)] = holder_of(engines)
    # Another holder took the leases (as after this process froze past its lease): its next heartbeat sees it.
    await holder.store.database.execute("UPDATE kf2v_leases SET holder = 'elsewhere', epoch = epoch + 1")

    await wait_until(lambda: holder.lease_lost.is_set(), within=15)
    assert not holder.worker.alive, "the worker stopped: nothing more is submitted from here"
    assert holder.lease is not None and not holder.lease.held and holder.lease.epochs == {}
    job = await holder.jobs.submit(draft())  # it still admits; the job waits for the live dispatcher
    assert job.state is JobState.QUEUED
    assert not standby.worker.alive, "the leases are 'elsewhere''s until they expire"


async def test_resume_on_a_standby_lifts_the_account_pause_the_dispatcher_found(
    start_engines: StartEngines, emulator: DashScopeEmulator
) -> None:
    """The dispatcher pauses an account the provider refuses (here every key but another is 401 InvalidApiKey);
    an owner's /kf2v-admin resume handled by a standby must reach it (issue 17, item 8)."""
    engines = await start_engines(2)
    (holder, holder_notes), [(standby, _)] = holder_of(engines)
    emulator.update(api_key="sk-some-other-key")  # our key refused: InvalidApiKey
    job = await standby.jobs.submit(draft(guild=1))
    await wait_until(lambda: bool(holder_notes.alerts), within=20)
    assert [key for key, _ in holder_notes.alerts] == ["alert.account_problem"]
    assert list(holder.worker.scheduler.limits.paused()) == ["primary"]
    await wait_until(lambda: bool(standby.worker.scheduler.limits.paused()), within=10)  # shown everywhere

    emulator.update(api_key=None)  # the owners fixed the key
    await standby.jobs.resume()
    await wait_until(lambda: all_delivered(holder, [job.id]), within=30)
    assert holder.worker.scheduler.limits.paused() == {}
    assert await holder.store.pauses() == []
