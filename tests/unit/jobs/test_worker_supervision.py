"""Supervision of a job's work and of the worker itself (issue 17): a job whose model left the catalog, and a
job whose work keeps crashing while its task is still at the provider. The real engine (SQLite file,
aiohttp) against the DashScope emulator."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.catalog import DEFAULT_CATALOG
from bot.i18n import t
from bot.jobs.models import ChargeState, JobState
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support.engine import all_final, draft, start_engine
from tests.support.waiting import wait_until

PLUS = "wanx2.1-kf2v-plus"


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(seed=17, pending_s=(0.05, 0.1), running_s=(0.1, 0.3)))
    await emu.start()
    yield emu
    await emu.stop()


async def test_jobs_of_a_model_that_left_the_catalog_fail_released_and_the_bot_starts(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    data = tmp_path / "data"
    emulator.update(pending_s=(60.0, 60.0))  # the first job's task waits at the provider
    services, _ = await start_engine(data, emulator.base_url)
    try:
        in_flight = await services.jobs.submit(draft(model=PLUS, resolution="720P", user=10))
        await wait_until(lambda: emulator.stats()["submissions_accepted"] == 1, within=30)
        await services.jobs.pause("maintenance")
        queued = await services.jobs.submit(draft(model=PLUS, resolution="720P", user=11))
    finally:
        await services.stop()
    # The operator's new catalog no longer offers the model.
    catalog = copy.deepcopy(DEFAULT_CATALOG)
    del catalog["models"][PLUS]
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps(catalog), encoding="utf-8")
    emulator.update(pending_s=(0.05, 0.1))
    services, recorder = await start_engine(data, emulator.base_url, KF2V_CATALOG_FILE=str(catalog_file))
    try:
        await services.jobs.resume()
        await wait_until(lambda: all_final(services, [in_flight.id, queued.id]), within=30)
        for job_id in (in_flight.id, queued.id):
            job = await services.store.get(job_id)
            assert job is not None and job.state is JobState.FAILED, job
            assert job.error_key == "job.failed.model_gone" and job.charge_state is ChargeState.RELEASED
        await wait_until(lambda: len(recorder.failed) >= 2, within=30)  # told just after the final row is written
        assert sorted(recorder.failed) == sorted([(in_flight.id, "job.failed.model_gone"),
                                                  (queued.id, "job.failed.model_gone")])  # fmt: skip
        for locale in ("en-US", "zh-CN"):
            assert t(locale, "job.failed.model_gone") != "job.failed.model_gone"
        assert emulator.stats()["cancels"] == 1, "the task still queued at the provider was cancelled"
        # The dispatcher runs on: a job of a model still offered is made.
        later = await services.jobs.submit(draft(user=12))
        await wait_until(lambda: all_final(services, [later.id]), within=30)
        assert (await services.store.get(later.id)).state is JobState.DELIVERED  # type: ignore[union-attr]
        assert services.worker.dispatching
    finally:
        await services.stop()


async def test_a_job_given_up_after_crashes_keeps_its_slot_until_its_task_is_over(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    emulator.update(pending_s=(60.0, 60.0))
    services, recorder = await start_engine(tmp_path, emulator.base_url)
    worker = services.worker
    worker.config = replace(worker.config, max_crashes=1)
    try:
        job = await services.jobs.submit(draft(user=10))

        async def queued_at_provider() -> bool:
            # The create's answer recorded (not only received by the provider): a job still SUBMITTING has a
            # task nobody can name yet, whose slot is kept for as long as a task could take (another case).
            row = await services.store.get(job.id)
            return row is not None and row.state is JobState.PENDING and row.task_id is not None

        await wait_until(queued_at_provider, within=30)
        assert emulator.stats()["submissions_accepted"] == 1

        async def bug() -> None:
            raise RuntimeError("a bug in this job's work")

        worker.supervisor.run(job.id, "test", bug())
        await wait_until(lambda: all_final(services, [job.id]), within=30)
        ended = await services.store.get(job.id)
        assert ended is not None and ended.charge_state is ChargeState.RELEASED
        # Given up only once the task was over: cancelled at the provider while still queued there, never
        # left running (and billed) with its slot handed to another job.
        [task] = emulator.stats()["tasks"]
        assert task["status"] == "CANCELED", task
        assert ("alert.job_crashed", {"job_id": job.id, "ref": recorder.alerts[0][1]["ref"]}) in recorder.alerts
        assert not worker.scheduler.limits.holds(job.id)
        # Pruned once the give-up has finished (the member is told after the FAILED row is written).
        await wait_until(lambda: worker.supervisor.crashes() == {}, within=30)
        emulator.update(pending_s=(0.05, 0.1))
        later = await services.jobs.submit(draft(user=11))
        await wait_until(lambda: all_final(services, [later.id]), within=30)
    finally:
        await services.stop()


async def test_healthz_names_a_dispatcher_that_is_not_running(tmp_path: Path, emulator: DashScopeEmulator) -> None:
    import socket

    import aiohttp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    services, _ = await start_engine(tmp_path, emulator.base_url, KF2V_HTTP_PORT=port)
    try:
        assert services.health is not None
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{services.health.url}/healthz") as response:
                body = await response.json()
                assert response.status == 200, body
            assert body["tasks"]["dispatcher"] == {"state": "running", "restarts": 0}
            await services.worker.stop()  # the one process of a SQLite install no longer dispatches
            async with http.get(f"{services.health.url}/healthz") as response:
                body = await response.json()
                assert response.status == 503
            assert body["failing"] == ["worker"] and body["details"]["worker"] == "the dispatcher is not running"
    finally:
        await services.stop()
