"""Bounded retries (issue 17, item 6 and the pending Cancel of item 8), against the DashScope emulator.

* A create whose answer never comes and that made no task (a slow uplink: the emulator reads the body slower
  than the client's timeout, the client resets, no task) is sent at most `max_submit_attempts` times, then
  failed released with the owners alerted: today it is sent again for ever.
* A lost answer's task is looked for around the moment the create LEFT, not when the job was marked
  SUBMITTING: the wan2.7 uploads in between (slowed down here) no longer push it out of the window, so it is
  adopted instead of paid twice.
* A Cancel pressed while a job goes back to the queue (its create lost, or its task failed for the provider's
  own reasons) is honoured before any resend: nothing more reaches the provider, nothing is charged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.app import Services
from bot.jobs.models import ChargeState, JobState
from bot.jobs.service import Actor, Draft
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig, FaultConfig
from tests.support import corpus
from tests.support.engine import all_final, draft, start_engine
from tests.support.waiting import wait_until

FAST = {"pending_s": (0.05, 0.2), "running_s": (0.2, 0.5)}
SLOW_UPLINK = 256 * 1024.0  # bytes a second the emulator reads create bodies at


def heavy_draft(**kw: Any) -> Draft:
    """A job whose create body (frames inline) is over a megabyte: minutes on the slow uplink."""
    frame = corpus.photo_jpeg(1280, 960)
    return draft(first_image=frame, last_image=frame, **kw)


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(seed=17, **FAST))  # type: ignore[arg-type]
    await emu.start()
    yield emu
    await emu.stop()


async def test_unanswered_creates_stop_at_the_attempt_limit_failed_released_owners_alerted(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    # 256 KB/s: the create body (two photo-like frames, ~1.2 MB inline) outlasts the 1 s timeout; the client
    # resets, the emulator sees the upload cut and creates nothing.
    emulator.update(upload_bytes_per_s=SLOW_UPLINK)
    services, recorder = await start_engine(tmp_path, emulator.base_url, KF2V_REQUEST_TIMEOUT=1)
    services.worker.config = replace(
        services.worker.config, max_submit_attempts=3, reconcile_grace_s=0.3, clock_skew_s=1.0
    )
    try:
        job = await services.jobs.submit(heavy_draft(prompt="a cat over a slow uplink"))
        await wait_until(lambda: all_final(services, [job.id]), within=60)
        done = await services.store.get(job.id)
        assert done is not None
        assert (done.state, done.charge_state, done.error_code) == (
            JobState.FAILED, ChargeState.RELEASED, "CreateUnanswered"
        )  # fmt: skip
        assert done.attempts == 3
        # The emulator notices each reset at its next read of the (slowly read) body.
        await wait_until(lambda: emulator.stats()["uploads_cut"] >= 3, within=60)
        assert [t for t in emulator.stats()["tasks"] if not t["neighbour"]] == []
        assert [key for key, _ in recorder.alerts].count("alert.creates_unanswered") == 1
        assert services.worker.counters["lost_creates_requeued"] == 2
    finally:
        await services.stop()


async def test_a_lost_answer_after_slow_uploads_is_adopted_not_sent_twice(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    # The upload policy answers 3 s late: the create leaves > request timeout + skew after SUBMITTING.
    emulator.update(lose_create_answer_rate=1.0, faults=FaultConfig(latency_s=3.0, routes=frozenset({"upload_policy"})))
    services, _ = await start_engine(tmp_path, emulator.base_url)
    services.worker.config = replace(
        services.worker.config, reconcile_grace_s=0.5, clock_skew_s=0.5, request_timeout_s=1.0
    )
    try:
        job = await services.jobs.submit(draft(prompt="a slow upload", model="wan2.7-i2v", resolution="720P"))
        await wait_until(lambda: emulator.stats()["faults"]["lost_create_answer"] >= 1, within=60)
        emulator.update(lose_create_answer_rate=0.0, faults=FaultConfig())
        await wait_until(lambda: all_final(services, [job.id]), within=90)
        done = await services.store.get(job.id)
        assert done is not None and done.state is JobState.DELIVERED
        ours = [t for t in emulator.stats()["tasks"] if not t["neighbour"]]
        assert [t["task_id"] for t in ours] == [done.task_id]  # one task, adopted: billed once
        assert services.worker.counters["reconciled"] == 1
        assert services.worker.counters["lost_creates_requeued"] == 0
    finally:
        await services.stop()


async def test_a_cancel_pressed_while_a_lost_create_is_resolved_is_honoured_before_any_resend(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    emulator.update(upload_bytes_per_s=SLOW_UPLINK)  # creates time out and make no task
    services, recorder = await start_engine(tmp_path, emulator.base_url, KF2V_REQUEST_TIMEOUT=1)
    services.worker.config = replace(services.worker.config, reconcile_grace_s=1.5, clock_skew_s=1.0)
    try:
        job = await services.jobs.submit(heavy_draft(user=7, prompt="cancel me while lost"))
        await wait_until(lambda: _state_is(services, job.id, JobState.SUBMITTING), within=30)
        # Its create is on the slow uplink (cut at the 1 s timeout, no task): the Cancel is only recorded.
        cancelled = await services.jobs.cancel(job.id, Actor(7))
        assert cancelled.state is JobState.SUBMITTING and cancelled.cancel_requested
        await wait_until(lambda: all_final(services, [job.id]), within=30)
        done = await services.store.get(job.id)
        assert done is not None
        assert (done.state, done.charge_state) == (JobState.CANCELED, ChargeState.RELEASED)
        assert done.attempts == 1  # never sent again
        assert [t for t in emulator.stats()["tasks"] if not t["neighbour"]] == []
        await wait_until(lambda: len(recorder.failed) >= 1, within=30)  # told just after the final row is written
        assert (job.id, "job.canceled") in recorder.failed
    finally:
        await services.stop()


async def _state_is(services: Services, job_id: int, state: JobState) -> bool:
    job = await services.store.get(job_id)
    return job is not None and job.state is state
