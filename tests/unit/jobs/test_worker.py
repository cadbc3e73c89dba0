"""The engine against the DashScope emulator over loopback, with a real SQLite file; the tests that exercise the
store (admission, ledger, reconciliation, cancel, pauses, retention, fair order) also on PostgreSQL (`store_env`).
The provider-side retry tests (throttling, 429s, errors, a bad key) stay on SQLite: the store plays no part
there that the others do not cover, and each costs seconds."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.app import Services
from bot.errors import InvalidInput
from bot.jobs.models import ChargeState, JobState, PauseScope
from bot.jobs.scheduler import RATE_WINDOW_S, QueuedJob
from bot.jobs.service import Actor
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support import corpus
from tests.support.engine import all_final, draft, jobs_by_id, start_engine
from tests.support.waiting import wait_until

FAST = {"pending_s": (0.05, 0.2), "running_s": (0.2, 0.5)}


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(seed=7, **FAST))  # type: ignore[arg-type]
    await emu.start()
    yield emu
    await emu.stop()


async def settle(services: Services, ids: list[int], within: float = 60) -> None:
    await wait_until(lambda: all_final(services, ids), within=within)


async def ledger_balances(services: Services) -> None:
    jobs = await services.store.all_jobs()
    ledger = await services.store.ledger()
    settled = sum(e.amount for e in ledger if e.kind == "settle")
    reserved = sum(e.amount for e in ledger if e.kind == "reserve")
    released = sum(e.amount for e in ledger if e.kind == "release")
    settled_jobs = [j for j in jobs if j.charge_state is ChargeState.SETTLED]
    assert settled == sum(j.cost_settled for j in jobs if j.state is JobState.DELIVERED)
    assert reserved - released - sum(j.cost_reserved for j in settled_jobs) == 0  # nothing left reserved
    for job in jobs:
        kinds = sorted(e.kind for e in ledger if e.job_id == job.id)
        assert kinds in (["release", "reserve"], ["reserve", "settle"]), (job.id, kinds)


async def test_backlog_within_limits_both_slots_busy_and_ledger_balances(
    tmp_path: Path, emulator: DashScopeEmulator, store_env: dict[str, Any]
) -> None:
    services, recorder = await start_engine(tmp_path, emulator.base_url, **store_env)
    try:
        ids = [(await services.jobs.submit(draft(guild=g, user=g * 10 + u))).id for g in (1, 2, 3) for u in range(4)]
        await settle(services, ids)
        jobs = await jobs_by_id(services, ids)
        assert {j.state for j in jobs} == {JobState.DELIVERED}
        stats = emulator.stats()
        assert stats["violations"] == []
        assert stats["submissions_accepted"] == len(ids)
        peak = max(v for per_model in stats["max_in_flight"].values() for v in per_model.values())
        assert peak == 2  # both slots used, never three
        assert sorted(job_id for job_id, _ in recorder.delivered) == sorted(ids)
        for _, video in recorder.delivered:
            assert video.path.read_bytes()[4:8] == b"ftyp"
        await ledger_balances(services)
    finally:
        await services.stop()


async def test_fair_order_across_guilds_and_users(
    tmp_path: Path, emulator: DashScopeEmulator, store_env: dict[str, Any]
) -> None:
    services, _ = await start_engine(tmp_path, emulator.base_url, **store_env)
    picks: list[int] = []  # the scheduler's decisions, in order (observed, not changed)
    decide = services.scheduler.next_dispatch

    def observed(now: float) -> tuple[QueuedJob, str] | None:
        picked = decide(now)
        if picked is not None:
            picks.append(picked[0].job_id)
        return picked

    services.scheduler.next_dispatch = observed  # type: ignore[method-assign]
    try:
        await services.jobs.pause("test")
        busy = [(await services.jobs.submit(draft(guild=1, user=11))).id for _ in range(6)]
        other_user = (await services.jobs.submit(draft(guild=1, user=12))).id
        small = (await services.jobs.submit(draft(guild=2, user=21))).id
        await services.jobs.resume()
        ids = [*busy, other_user, small]
        await settle(services, ids)
        expected = [busy[0], small, other_user, *busy[1:]]  # guild 1, guild 2, guild 1's other member, then FIFO
        assert picks == expected
        assert {j.state for j in await jobs_by_id(services, ids)} == {JobState.DELIVERED}
        if not store_env:
            # One SQLite connection: the SUBMITTING writes commit in pick order. PostgreSQL's pool runs the
            # two writes of jobs picked together in parallel, so their timestamps may come in either order.
            jobs = sorted(await jobs_by_id(services, ids), key=lambda j: (j.submitted_at, j.id))
            assert [j.id for j in jobs] == expected
    finally:
        await services.stop()


async def test_throttle_burst_delays_but_neither_fails_nor_charges(tmp_path: Path, emulator: DashScopeEmulator) -> None:
    emulator.update(throttle_rate=0.5)
    services, _ = await start_engine(tmp_path, emulator.base_url)
    try:
        ids = [(await services.jobs.submit(draft(user=u))).id for u in range(6)]
        await wait_until(lambda: services.worker.counters["throttled"] >= 2, within=30)
        emulator.update(throttle_rate=0.0)
        await settle(services, ids)
        jobs = await jobs_by_id(services, ids)
        assert all(j.state is JobState.DELIVERED for j in jobs)
        assert emulator.stats()["submissions_accepted"] == len(ids)
        assert sum(j.cost_settled for j in jobs) == len(ids) * 500
        await ledger_balances(services)
    finally:
        await services.stop()


async def test_someone_else_on_the_account_causes_429_that_is_absorbed(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    from tests.support.engine import API_KEY

    emulator.occupy_slots(API_KEY, "wan2.2-kf2v-flash", 2)
    services, _ = await start_engine(tmp_path, emulator.base_url)
    try:
        job = await services.jobs.submit(draft())
        await wait_until(lambda: services.worker.counters["throttled"] >= 1, within=20)
        emulator.occupy_slots(API_KEY, "wan2.2-kf2v-flash", 0)
        await settle(services, [job.id], within=60)
        done = await services.store.get(job.id)
        assert done is not None and done.state is JobState.DELIVERED
        # Sent again after each 429, but a create refused before processing is no attempt: a throttle burst
        # leaves the job all its `max_submit_attempts` for lost or failed creates.
        assert services.worker.counters["throttled"] >= 1 and done.attempts == 1
    finally:
        await services.stop()


async def test_content_check_failure_is_explained_and_released(
    tmp_path: Path, emulator: DashScopeEmulator, store_env: dict[str, Any]
) -> None:
    services, recorder = await start_engine(tmp_path, emulator.base_url, **store_env)
    try:
        late = await services.jobs.submit(draft(prompt="a cat FAIL_CONTENT"))
        early = await services.jobs.submit(draft(prompt="a cat REJECT_CONTENT"))
        await settle(services, [late.id, early.id])
        for job in await jobs_by_id(services, [late.id, early.id]):
            assert job.state is JobState.FAILED
            assert job.error_key == "job.failed.content"
            assert job.charge_state is ChargeState.RELEASED
        # The member is told just after the FAILED row is written: wait for both messages, then compare.
        await wait_until(lambda: len(recorder.failed) >= 2, within=30)
        assert sorted(recorder.failed) == sorted([(late.id, "job.failed.content"), (early.id, "job.failed.content")])
        await ledger_balances(services)
    finally:
        await services.stop()


async def test_lost_create_answers_are_reconciled_never_resubmitted(
    tmp_path: Path, emulator: DashScopeEmulator, store_env: dict[str, Any]
) -> None:
    emulator.update(drop_rate=1.0, routes=frozenset({"create"}))
    services, _ = await start_engine(tmp_path, emulator.base_url, **store_env)
    try:
        ids = [(await services.jobs.submit(draft(user=u))).id for u in range(3)]
        await wait_until(lambda: emulator.stats()["submissions_accepted"] >= 1, within=20)
        emulator.update(drop_rate=0.0)
        await settle(services, ids)
        assert {j.state for j in await jobs_by_id(services, ids)} == {JobState.DELIVERED}
        assert emulator.stats()["submissions_accepted"] == len(ids)  # exactly one task per job
        await ledger_balances(services)
    finally:
        await services.stop()


async def test_a_restart_counts_a_create_that_may_have_left_in_the_rate_window_from_the_restart(
    tmp_path: Path, emulator: DashScopeEmulator, store_env: dict[str, Any]
) -> None:
    # The create reaches the provider and its answer is lost (the connection closes after processing); the
    # engine stops before it looks for the task, leaving the row SUBMITTING. Its `submitted_at` was written
    # before the body was built and sent, so it does not say when the provider counted the create (a SIGKILL
    # may come just after it left): the restarted engine counts it as sent at the restart, and in flight.
    emulator.update(drop_rate=1.0, routes=frozenset({"create"}), pending_s=(60.0, 60.0))
    one_per_window = {"KF2V_SUBMIT_RPS": 1, **store_env}  # a burst of 1: one remembered create fills the window
    first, _ = await start_engine(tmp_path, emulator.base_url, **one_per_window)
    first.worker.config = replace(first.worker.config, reconcile_grace_s=60.0)
    try:
        job = await first.jobs.submit(draft())
        await wait_until(lambda: emulator.stats()["submissions_accepted"] == 1, within=30)
        sent = await first.store.get(job.id)
        assert sent is not None and sent.state is JobState.SUBMITTING and sent.account is not None
    finally:
        await first.stop()
    emulator.update(drop_rate=0.0)
    restarted_at = time.monotonic()  # the worker's clock
    second, _ = await start_engine(tmp_path, emulator.base_url, **one_per_window)
    try:
        await wait_until(lambda: second.worker.dispatching, within=30)  # recovered (PostgreSQL: lease taken)
        limits = second.worker.scheduler.limits
        lane = (sent.account, sent.request.model)
        assert limits.in_flight()[lane] == 1
        ready = limits.ready_at(*lane, restarted_at)
        assert ready is not None and ready >= restarted_at + RATE_WINDOW_S, (ready, restarted_at)
    finally:
        await second.stop()


async def test_provider_errors_are_retried_within_bounds(tmp_path: Path, emulator: DashScopeEmulator) -> None:
    emulator.update(error_rate=0.3, malformed_rate=0.1, routes=frozenset({"get", "video"}))
    services, _ = await start_engine(tmp_path, emulator.base_url)
    try:
        ids = [(await services.jobs.submit(draft(user=u))).id for u in range(4)]
        await settle(services, ids, within=90)
        assert {j.state for j in await jobs_by_id(services, ids)} == {JobState.DELIVERED}
        assert emulator.stats()["submissions_accepted"] == len(ids)
    finally:
        await services.stop()


async def test_delivery_failure_is_retried_without_a_new_generation(
    tmp_path: Path, emulator: DashScopeEmulator, store_env: dict[str, Any]
) -> None:
    services, recorder = await start_engine(tmp_path, emulator.base_url, **store_env)
    recorder.fail_deliveries = 2
    try:
        job = await services.jobs.submit(draft())
        await settle(services, [job.id])
        done = await services.store.get(job.id)
        assert done is not None and done.state is JobState.DELIVERED and done.delivery_attempts == 2
        assert [job_id for job_id, _ in recorder.delivered] == [job.id]
        assert emulator.stats()["submissions_accepted"] == 1
    finally:
        await services.stop()


async def test_bad_key_pauses_the_account_and_keeps_jobs_queued(tmp_path: Path) -> None:
    emu = DashScopeEmulator(EmulatorConfig(api_key="sk-the-right-one", **FAST))  # type: ignore[arg-type]
    await emu.start()
    services, recorder = await start_engine(tmp_path, emu.base_url)
    try:
        job = await services.jobs.submit(draft())
        await wait_until(lambda: bool(recorder.alerts), within=20)
        assert recorder.alerts[0][0] == "alert.account_problem"
        # The owners are alerted before the job goes back to the queue: wait for that write.
        await wait_until(lambda: state_is(services, job.id, JobState.QUEUED), within=20)
        again = await services.store.get(job.id)
        assert again is not None and again.state is JobState.QUEUED and again.charge_state is ChargeState.RESERVED
        assert "sk-the-right-one" not in repr(recorder.alerts)
    finally:
        await services.stop()
        await emu.stop()


async def test_cancel_while_queued_and_while_pending(
    tmp_path: Path, emulator: DashScopeEmulator, store_env: dict[str, Any]
) -> None:
    emulator.update(pending_s=(3.0, 3.0))
    services, recorder = await start_engine(tmp_path, emulator.base_url, **store_env)
    try:
        await services.jobs.pause("hold")
        queued = await services.jobs.submit(draft(user=1))
        with pytest.raises(Exception) as info:
            await services.jobs.cancel(queued.id, Actor(user_id=999))
        assert getattr(info.value, "key", "") == "job.not_yours"
        cancelled = await services.jobs.cancel(queued.id, Actor(user_id=1))
        assert cancelled.state is JobState.CANCELED and cancelled.charge_state is ChargeState.RELEASED
        pending = await services.jobs.submit(draft(user=2))
        await services.jobs.resume()
        await wait_until(lambda: _state_is(services, pending.id, JobState.PENDING), within=20)
        await services.jobs.cancel(pending.id, Actor(user_id=2))
        await settle(services, [pending.id])
        done = await services.store.get(pending.id)
        assert done is not None and done.state is JobState.CANCELED and done.charge_state is ChargeState.RELEASED
        assert emulator.stats()["cancels"] == 1
        with pytest.raises(InvalidInput):
            await services.jobs.cancel(pending.id, Actor(user_id=2))
        await ledger_balances(services)
        await wait_until(lambda: len(recorder.failed) >= 2, within=30)  # told just after the final row is written
        assert {job_id for job_id, _ in recorder.failed} == {queued.id, pending.id}
    finally:
        await services.stop()


async def _state_is(services: Services, job_id: int, state: JobState) -> bool:
    job = await services.store.get(job_id)
    return job is not None and job.state is state


async def test_retention_removes_old_videos_and_frames_but_keeps_live_ones(
    tmp_path: Path, emulator: DashScopeEmulator, store_env: dict[str, Any]
) -> None:
    services, _ = await start_engine(tmp_path, emulator.base_url, KF2V_VIDEO_RETENTION_DAYS=0, **store_env)
    try:
        done = await services.jobs.submit(draft(user=1))
        await settle(services, [done.id])
        await services.jobs.pause("hold")
        waiting = await services.jobs.submit(draft(user=2, last_image=corpus.good_png(320, 240, (0, 200, 0))))
        finished = await services.store.get(done.id)
        assert finished is not None and finished.video_path is not None
        video = Path(finished.video_path)
        assert video.exists()
        removed = await services.sweep_media()
        assert removed >= 2 and not video.exists()
        after = await services.store.get(done.id)
        assert after is not None and after.video_path is None
        assert services.media.frame_path(waiting.first_frame).exists()  # still needed by a queued job
        assert services.media.frame_path(waiting.last_frame or "").exists()
        assert not services.media.frame_path(finished.last_frame or "").exists()
    finally:
        await services.stop()


async def test_a_guild_pause_holds_only_that_guild_and_survives_a_restart(
    tmp_path: Path, emulator: DashScopeEmulator, store_env: dict[str, Any]
) -> None:
    services, recorder = await start_engine(tmp_path, emulator.base_url, **store_env)
    try:
        await services.jobs.pause("moderation review", guild_id=1)
        held = await services.jobs.submit(draft(guild=1, user=11))
        free = await services.jobs.submit(draft(guild=2, user=21))
        await settle(services, [free.id])
        still = await services.store.get(held.id)
        assert still is not None and still.state is JobState.QUEUED
        pause = services.jobs.pause_for(1)
        assert pause is not None and (pause.scope, pause.target, pause.reason) == (
            PauseScope.GUILD, "1", "moderation review",
        )  # fmt: skip
        assert services.jobs.pause_for(2) is None and not services.jobs.paused
        assert services.jobs.progress(still).paused == "moderation review"
        assert all(p.paused is None for job_id, _, p in recorder.updates if job_id == free.id)
    finally:
        await services.stop()
    services, _ = await start_engine(tmp_path, emulator.base_url, **store_env)
    try:
        await services.jobs.load_pause_state()
        assert [(p.scope, p.target) for p in services.jobs.pauses()] == [(PauseScope.GUILD, "1")]
        await services.jobs.resume(guild_id=1)
        await settle(services, [held.id])
        delivered = await services.store.get(held.id)
        assert delivered is not None and delivered.state is JobState.DELIVERED
    finally:
        await services.stop()
    services, _ = await start_engine(tmp_path, emulator.base_url, **store_env)
    try:
        await services.jobs.load_pause_state()
        assert services.jobs.pauses() == []  # the resume was persisted too
    finally:
        await services.stop()


async def state_is(services: Services, job_id: int, state: JobState) -> bool:
    job = await services.store.get(job_id)
    return job is not None and job.state is state
