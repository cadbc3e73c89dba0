"""The engine against the emulator in its truthful modes (issue 10): lost create answers among a neighbour's
tasks, malformed poll answers, absurd bills, foreign video URLs, and crashes inside a job's own work.

Real SQLite file, real aiohttp client over loopback; faults are the emulator's, except the crash tests, which
break one worker step on purpose (that step is what the supervisor exists for).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.app import Services
from bot.jobs.models import ChargeState, Job, JobState
from bot.jobs.quota import Settlement
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig, api_key_id
from tests.support.engine import API_KEY, all_final, draft, jobs_by_id, start_engine
from tests.support.waiting import wait_until

FAST = {"pending_s": (0.05, 0.2), "running_s": (0.2, 0.5)}


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(seed=11, **FAST))  # type: ignore[arg-type]
    await emu.start()
    yield emu
    await emu.stop()


async def settle(services: Services, ids: list[int], within: float = 90) -> None:
    await wait_until(lambda: all_final(services, ids), within=within)


def our_tasks(emulator: DashScopeEmulator) -> list[dict[str, Any]]:
    return [t for t in emulator.stats()["tasks"] if not t["neighbour"]]


def assert_own_tasks(emulator: DashScopeEmulator, jobs: list[Job]) -> None:
    """Each job has exactly one task, created with our key; no neighbour task was adopted."""
    timeline = {t["task_id"]: t for t in emulator.stats()["tasks"]}
    for job in jobs:
        assert job.task_id is not None, job.id
        task = timeline[job.task_id]
        assert not task["neighbour"], f"job {job.id} adopted the neighbour's task {job.task_id}"
        assert task["api_key_id"] == api_key_id(API_KEY)
    assert sorted(t["task_id"] for t in our_tasks(emulator)) == sorted(j.task_id or "" for j in jobs)


async def test_lost_answers_among_a_neighbours_tasks_before_our_key_id_is_known(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    """Every create answer lost from the start (no task of ours known, so no api_key_id either): each job is
    matched by the prompt its task echoes, never by being "the first unknown task"."""
    emulator.update(lose_create_answer_rate=1.0, neighbour_rate=2.0, max_in_flight=4)
    services, _ = await start_engine(tmp_path, emulator.base_url)
    try:
        ids = [(await services.jobs.submit(draft(user=u, prompt=f"a cat number {u} looks up"))).id for u in range(3)]
        await wait_until(lambda: emulator.stats()["faults"]["lost_create_answer"] >= 3, within=30)
        await wait_until(lambda: emulator.stats()["neighbour"]["created"] >= 3, within=30)
        emulator.update(lose_create_answer_rate=0.0)
        await settle(services, ids)
        jobs = await jobs_by_id(services, ids)
        assert [j.state for j in jobs] == [JobState.DELIVERED] * 3
        assert_own_tasks(emulator, jobs)
        lost = emulator.stats()["faults"]["lost_create_answer"]
        assert services.worker.counters["reconciled"] == lost == 3
        assert services.worker.counters["lost_creates_requeued"] == 0
        # Learned from a task confirmed by its echo: the next lost answer needs no polling to tell strangers apart.
        assert await services.store.api_key_id(next(iter(services.worker.clients))) == api_key_id(API_KEY)
    finally:
        await services.stop()


async def test_lost_answers_among_a_neighbours_tasks_with_our_key_id_learned(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    # The neighbour shares the account's 2 submissions a second: at 0.5/s it leaves the bot room to send, so
    # the four lost creates happen within the wait below even on a loaded machine.
    emulator.update(neighbour_rate=0.5, max_in_flight=4)
    services, _ = await start_engine(tmp_path, emulator.base_url)
    account = next(iter(services.worker.clients))
    try:
        first = await services.jobs.submit(draft(user=1, prompt="the first cat"))
        await settle(services, [first.id])
        # A create answered normally teaches the bot its key's id, from the task list.
        await wait_until(lambda: services.store.api_key_id(account), within=20)
        assert await services.store.api_key_id(account) == api_key_id(API_KEY)
        # Strangers' tasks of the same model are in the list before any answer is lost.
        await wait_until(lambda: emulator.stats()["neighbour"]["created"] >= 1, within=30)
        emulator.update(lose_create_answer_rate=1.0)
        ids = [(await services.jobs.submit(draft(user=u, prompt=f"cat {u}"))).id for u in range(2, 6)]
        await wait_until(lambda: emulator.stats()["faults"]["lost_create_answer"] >= 4, within=60)
        emulator.update(lose_create_answer_rate=0.0)
        await settle(services, ids)
        jobs = await jobs_by_id(services, [first.id, *ids])
        assert {j.state for j in jobs} == {JobState.DELIVERED}
        assert_own_tasks(emulator, jobs)
        assert emulator.stats()["neighbour"]["created"] >= 1
        assert services.worker.counters["reconciled"] == 4
        assert services.worker.counters["lost_creates_requeued"] == 0
    finally:
        await services.stop()


async def test_a_lost_answer_does_not_hold_up_the_accounts_other_jobs(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    """While one job waits for its possible task to prove itself, the next job is sent and accepted."""
    emulator.update(lose_create_answer_rate=1.0, running_s=(3.0, 3.0))
    services, _ = await start_engine(tmp_path, emulator.base_url)
    try:
        lost = await services.jobs.submit(draft(user=1, prompt="the lost one"))
        await wait_until(lambda: emulator.stats()["faults"]["lost_create_answer"] >= 1, within=20)
        emulator.update(lose_create_answer_rate=0.0)
        other = await services.jobs.submit(draft(user=2, prompt="the other one"))
        await wait_until(lambda: _state_in(services, other.id, {JobState.PENDING, JobState.RUNNING}), within=20)
        # Its task runs 3 s and echoes its prompt only when done, so it is still being resolved.
        still = await services.store.get(lost.id)
        assert still is not None and still.state is JobState.SUBMITTING
        assert services.scheduler.limits.in_flight() == {(account_of(services), "wan2.2-kf2v-flash"): 2}
        await settle(services, [lost.id, other.id])
        jobs = await jobs_by_id(services, [lost.id, other.id])
        assert [j.state for j in jobs] == [JobState.DELIVERED] * 2
        assert_own_tasks(emulator, jobs)
    finally:
        await services.stop()


def account_of(services: Services) -> str:
    return next(iter(services.worker.clients))


async def _state_in(services: Services, job_id: int, states: set[JobState]) -> bool:
    job = await services.store.get(job_id)
    return job is not None and job.state in states


async def test_malformed_poll_answers_fail_no_job_and_never_exceed_two_in_flight(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    emulator.update(malformed_poll_rate=0.3)
    services, _ = await start_engine(tmp_path, emulator.base_url)
    try:
        ids = [(await services.jobs.submit(draft(user=u))).id for u in range(6)]
        await settle(services, ids)
        assert {j.state for j in await jobs_by_id(services, ids)} == {JobState.DELIVERED}
        stats = emulator.stats()
        malformed = sum(stats["malformed_polls"].values())
        assert malformed > 0
        assert services.worker.counters["malformed_answers"] == malformed
        peak = max(v for per_model in stats["max_in_flight"].values() for v in per_model.values())
        assert peak <= 2
        assert stats["violations"] == []
        assert stats["submissions_accepted"] == len(ids)
    finally:
        await services.stop()


@pytest.mark.parametrize("bill", ["huge", "infinity", "nan", "negative"])
async def test_an_absurd_bill_is_clamped_and_the_guild_orders_its_next_video(
    tmp_path: Path, emulator: DashScopeEmulator, bill: str
) -> None:
    emulator.update(absurd_billing=bill)
    # A daily budget of exactly two videos: a bill over the reservation would leave no room for the second.
    services, recorder = await start_engine(tmp_path, emulator.base_url, KF2V_DEFAULT_DAILY_BUDGET="1")
    try:
        first = await services.jobs.submit(draft(user=1))
        await settle(services, [first.id])
        done = await services.store.get(first.id)
        assert done is not None and done.state is JobState.DELIVERED
        assert done.cost_settled == done.cost_reserved == 500
        assert services.worker.counters["bills_clamped"] == 1
        assert [key for key, _ in recorder.alerts] == ["alert.bill_clamped"]
        second = await services.jobs.submit(draft(user=2))
        await settle(services, [second.id])
        again = await services.store.get(second.id)
        assert again is not None and again.state is JobState.DELIVERED
        usage = await services.store.guild_usage(1, 1, done.period_day, done.period_month)
        assert usage.spent_day == 1000
    finally:
        await services.stop()


@pytest.mark.parametrize("redirect", [False, True], ids=["direct", "redirect"])
async def test_a_foreign_video_url_is_never_requested_and_the_user_is_told(
    tmp_path: Path, emulator: DashScopeEmulator, redirect: bool
) -> None:
    emulator.update(foreign_video_url="{trap}/latest/meta-data/", foreign_video_redirect=redirect)
    services, recorder = await start_engine(tmp_path, emulator.base_url)
    try:
        job = await services.jobs.submit(draft())
        await settle(services, [job.id])
        done = await services.store.get(job.id)
        assert done is not None and done.state is JobState.FAILED
        assert done.error_key == "job.failed.video_refused"
        # The provider billed the task, but the guild's members see no video: the guild is not charged.
        assert done.charge_state is ChargeState.RELEASED and done.cost_settled == 0
        ledger = [(e.kind, e.amount) for e in await services.store.ledger() if e.job_id == job.id]
        assert ledger == [("reserve", 500), ("settle", 500), ("release", 500)]
        # The owners' alert follows the FAILED row and the member's message: wait for it, then count.
        await wait_until(lambda: bool(recorder.alerts), within=10)
        assert recorder.failed == [(job.id, "job.failed.video_refused")]
        assert recorder.delivered == []
        assert recorder.alerts == [("alert.video_url_refused", {"job_id": job.id, "task_id": done.task_id})]
        assert emulator.stats()["foreign_requests"] == 0
        assert services.worker.counters["video_urls_refused"] == 1
        assert not services.media.video_path(job.id).exists()
    finally:
        await services.stop()


async def test_a_crash_in_a_jobs_work_restarts_it_from_its_row(tmp_path: Path, emulator: DashScopeEmulator) -> None:
    services, _ = await start_engine(tmp_path, emulator.base_url)
    services.worker.config = replace(services.worker.config, crash_backoff_s=0.05)
    real = services.worker.budget.settlement
    crashes = 0

    def settlement_with_a_bug(job: Job, billed_seconds: float | None) -> Settlement:
        nonlocal crashes
        if crashes < 2:
            crashes += 1
            raise ArithmeticError("a bug while settling")
        return real(job, billed_seconds)

    services.worker.budget.settlement = settlement_with_a_bug  # type: ignore[method-assign]
    try:
        job = await services.jobs.submit(draft())
        await settle(services, [job.id])
        done = await services.store.get(job.id)
        assert done is not None and done.state is JobState.DELIVERED and done.cost_settled == 500
        assert services.worker.counters["job_crashes"] == 2
        assert emulator.stats()["submissions_accepted"] == 1
    finally:
        await services.stop()


async def test_a_job_that_keeps_crashing_fails_released_with_a_reference(
    tmp_path: Path, emulator: DashScopeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    services, recorder = await start_engine(tmp_path, emulator.base_url)
    services.worker.config = replace(services.worker.config, crash_backoff_s=0.05)

    def always_broken(job: Job, billed_seconds: float | None) -> Settlement:
        raise ArithmeticError("a bug while settling")

    services.worker.budget.settlement = always_broken  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.ERROR, logger="bot.jobs.worker"):
            job = await services.jobs.submit(draft())
            await settle(services, [job.id])
        done = await services.store.get(job.id)
        assert done is not None and done.state is JobState.FAILED
        assert done.error_key == "job.failed.internal" and done.charge_state is ChargeState.RELEASED
        assert services.worker.counters["job_crashes"] == 3
        refs = {getattr(r, "ref", None) for r in caplog.records if r.exc_info}
        assert len(refs) == 3 and None not in refs
        # The owners' alert follows the FAILED row (the row commits first): wait for it, then count.
        await wait_until(lambda: any(key == "alert.job_crashed" for key, _ in recorder.alerts), within=10)
        alerts = [params for key, params in recorder.alerts if key == "alert.job_crashed"]
        assert len(alerts) == 1 and alerts[0]["ref"] in refs
        assert done.error_detail == f"ref {alerts[0]['ref']}"
        assert services.scheduler.limits.in_flight() == {(account_of(services), "wan2.2-kf2v-flash"): 0}
    finally:
        await services.stop()


class _FailingProvider:
    """A DashScope stand-in over loopback whose first tasks FAIL with the given codes (the emulator only fails
    tasks for their content): create, poll and the video, nothing more."""

    MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64)

    def __init__(self, codes: list[str]) -> None:
        self.codes = codes
        self.created: list[str] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v1/services/aigc/image2video/video-synthesis", self._create)
        app.router.add_get("/api/v1/tasks/{task_id}", self._get)
        app.router.add_get("/videos/{task_id}.mp4", self._video)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/api/v1"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _create(self, request: web.Request) -> web.Response:
        task_id = f"task-{len(self.created) + 1}"
        self.created.append(task_id)
        return web.json_response({"request_id": "r", "output": {"task_id": task_id, "task_status": "PENDING"}})

    async def _get(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        index = self.created.index(task_id)
        output: dict[str, Any] = {"task_id": task_id, "submit_time": "2026-01-01 08:00:00.000"}
        if index < len(self.codes):
            output.update(task_status="FAILED", code=self.codes[index], message="the provider gave up")
            return web.json_response({"request_id": "r", "output": output})
        origin = self.base_url.removesuffix("/api/v1")
        output.update(task_status="SUCCEEDED", video_url=f"{origin}/videos/{task_id}.mp4", orig_prompt="p")
        return web.json_response({"request_id": "r", "output": output, "usage": {"video_duration": 5}})

    async def _video(self, request: web.Request) -> web.Response:
        return web.Response(body=self.MP4, content_type="video/mp4")


@pytest.mark.parametrize(
    ("codes", "state", "tasks"),
    [
        (["InternalError.Algo"], JobState.DELIVERED, 2),
        (["ModelServingError", "InternalError"], JobState.FAILED, 2),
        (["DataInspectionFailed"], JobState.FAILED, 1),
    ],
    ids=["temporary-then-ok", "temporary-twice", "content"],
)
async def test_a_task_failed_for_the_providers_own_reasons_is_sent_once_more(
    tmp_path: Path, codes: list[str], state: JobState, tasks: int
) -> None:
    provider = _FailingProvider(codes)
    await provider.start()
    services, _ = await start_engine(tmp_path, provider.base_url)
    try:
        job = await services.jobs.submit(draft())
        await settle(services, [job.id], within=30)
        done = await services.store.get(job.id)
        assert done is not None and done.state is state
        assert len(provider.created) == tasks
        assert await services.store.provider_tasks_used(job.id) == tasks
        ledger = [e.kind for e in await services.store.ledger() if e.job_id == job.id]
        assert ledger == (["reserve", "settle"] if state is JobState.DELIVERED else ["reserve", "release"])
        assert services.worker.counters["resubmitted_after_failure"] == tasks - 1
    finally:
        await services.stop()
        await provider.stop()


async def test_a_video_that_is_not_an_mp4_fails_the_job_uncharged_and_alerts_the_owners(tmp_path: Path) -> None:
    provider = _FailingProvider([])
    provider.MP4 = b"<html><body>502 Bad Gateway</body></html>"  # what a broken CDN serves under a video's name
    await provider.start()
    services, recorder = await start_engine(tmp_path, provider.base_url)
    try:
        job = await services.jobs.submit(draft())
        await settle(services, [job.id], within=30)
        done = await services.store.get(job.id)
        assert done is not None and done.state is JobState.FAILED and done.error_key == "job.failed.not_a_video"
        assert done.charge_state is ChargeState.RELEASED and done.cost_settled == 0
        ledger = [(e.kind, e.amount) for e in await services.store.ledger() if e.job_id == job.id]
        assert ledger == [("reserve", 500), ("settle", 500), ("release", 500)]
        await wait_until(lambda: bool(recorder.alerts), within=10)
        assert recorder.failed == [(job.id, "job.failed.not_a_video")] and recorder.delivered == []
        assert recorder.alerts == [("alert.not_a_video", {"job_id": job.id, "task_id": "task-1"})]
        assert services.worker.errors_by_code.get("NotAVideo") == 1  # refused at once, not downloaded again
        assert not services.media.video_path(job.id).exists()
    finally:
        await services.stop()
        await provider.stop()


async def test_a_video_over_the_cap_is_fetched_once_then_posted_as_its_link(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    emulator.update(video_min_bytes=300_000)
    services, recorder = await start_engine(tmp_path, emulator.base_url, KF2V_MAX_VIDEO_BYTES=100_000)
    try:
        job = await services.jobs.submit(draft())
        await settle(services, [job.id])
        done = await services.store.get(job.id)
        assert done is not None and done.state is JobState.DELIVERED
        [(delivered_id, video)] = recorder.delivered
        assert delivered_id == job.id and video.url is not None and video.url.startswith(emulator.base_url[:20])
        assert video.size > 100_000 and not video.path.exists()
        assert video.url_expires_at == done.video_url_expires_at
        assert services.worker.errors_by_code.get("VideoTooLarge") == 1  # one attempt, not eight
        assert emulator.stats()["calls"].get("video", 0) == 1
    finally:
        await services.stop()
