"""Stories under the member's limits, quick Redo choices and a cancel (issue 17, items 7 and 8), through the real
engine (JobService, scheduler, worker, SQLite) against the DashScope emulator or a loopback stand-in.

* A failed segment's retry is not refused by the member's queue limit because of the story's own segments.
* A retry refused by the budget tells what the story will really cost (its segments still generating count),
  not 0.00 while they run and settle.
* Two quick Redo choices of a delivered story make one regeneration: the other is refused, nothing paid twice.
* A story cancel covers segments being submitted; a segment whose task fails for the provider's own reasons
  after the cancel is not sent again, and not charged.
* A story's per-story state (its lock, its last status) is not brought back by a segment event arriving after the
  story ended, nor left behind by a refused Redo.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.errors import InvalidInput, QueueFull, QuotaExceeded
from bot.jobs.models import ChargeState, Job, JobState
from bot.jobs.service import Actor
from bot.jobs.story.join import join_segments
from bot.jobs.story.plan import StoryState
from bot.jobs.story.service import SegmentRouter, StoryService
from bot.jobs.story.store import StoryStore
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support.engine import all_final, draft, start_engine
from tests.support.recording import RecordingNotifier
from tests.support.waiting import wait_until
from tests.unit.jobs.test_story_engine import Engine, RecordingStoryNotifier, story_draft, story_now

FAST = {"pending_s": (0.05, 0.2), "running_s": (0.2, 0.5)}


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(seed=23, **FAST))  # type: ignore[arg-type]
    await emu.start()
    yield emu
    await emu.stop()


async def start_at(tmp_path: Path, base_url: str, **overrides: object) -> Engine:
    recorder = RecordingNotifier()
    router = SegmentRouter(recorder)
    services, _ = await start_engine(tmp_path, base_url, notifier=router, **overrides)
    stories = StoryService(services.jobs, StoryStore(services.store.database), join_segments)
    told = RecordingStoryNotifier()
    stories.notifier = told
    router.stories = stories
    return Engine(services, stories, told, recorder)


async def stop(engine: Engine) -> None:
    await engine.stories.wait_idle()
    await engine.services.stop()


async def all_jobs(engine: Engine, story_id: int) -> list[Job]:
    jobs = [await engine.services.store.get(j.job_id) for j in await engine.stories.stories.segment_jobs(story_id)]
    assert all(j is not None for j in jobs)
    return [j for j in jobs if j is not None]


async def settled_total(engine: Engine, story_id: int) -> int:
    return sum(j.cost_settled or 0 for j in await all_jobs(engine, story_id) if j.charge_state is ChargeState.SETTLED)


async def story_jobs_final(engine: Engine, story_id: int) -> bool:
    return all(j.is_final for j in await all_jobs(engine, story_id))


async def test_a_failed_segments_retry_is_not_refused_by_the_storys_own_segments(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    # The middle segment is refused at create (content): its retry is admitted while the other two segments
    # are still active, which fills a queue limit of 2 with the story's own jobs.
    emulator.update(running_s=(2.0, 2.0))
    engine = await start_at(tmp_path, emulator.base_url, KF2V_DEFAULT_USER_QUEUE_LIMIT=2)
    try:
        story, _ = await engine.stories.submit(story_draft("dawn | REJECT_CONTENT noon | dusk"))
        await wait_until(lambda: awaiting_choice(engine, story.id), within=60)
        await wait_until(lambda: story_jobs_final(engine, story.id), within=60)
        await engine.stories.wait_idle()
        middle = [j for j in await all_jobs(engine, story.id) if j.segment_index == 1]
        assert [j.state for j in middle] == [JobState.FAILED, JobState.FAILED]  # retried once, as promised
        assert engine.told.reasons == ["story.failed"]  # failed twice, not "refused by the queue limit"
        assert engine.told.failed[0][1] == await settled_total(engine, story.id) > 0
    finally:
        await stop(engine)


async def test_a_running_story_takes_one_place_in_its_members_queue_limit(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    emulator.update(running_s=(2.0, 2.0))
    engine = await start_at(tmp_path, emulator.base_url, KF2V_DEFAULT_USER_QUEUE_LIMIT=2)
    try:
        story, segments = await engine.stories.submit(story_draft())  # 3 segments, all unfinished for a while
        assert len(segments) == 3
        # The story is one request: the member still has a place for a /kf2v (3 jobs would fill a limit of 2).
        job = await engine.services.jobs.submit(draft(user=10, prompt="while my story runs"))
        with pytest.raises(QueueFull):  # and only one
            await engine.services.jobs.submit(draft(user=10, prompt="one more"))
        await wait_until(lambda: delivered(engine, story.id), within=60)
        await wait_until(lambda: all_final(engine.services, [job.id]), within=60)
    finally:
        await stop(engine)


async def test_a_refused_retry_tells_what_the_running_segments_will_cost_not_zero(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    emulator.update(running_s=(2.0, 2.0))
    engine = await start_at(tmp_path, emulator.base_url)
    jobs = engine.services.jobs
    try:
        await jobs.pause("budget set after admission", guild_id=1)
        draft = story_draft("dawn | REJECT_CONTENT noon | dusk")
        story, _ = await engine.stories.submit(draft)
        # Admitted already; the failed segment's money back, its retry still does not fit.
        await jobs.set_budgets(1, daily=story.cost_reserved - 1, monthly=None)
        await jobs.resume(guild_id=1)
        await wait_until(lambda: awaiting_choice(engine, story.id), within=60)
        await engine.stories.wait_idle()
        assert engine.told.reasons == ["story.retry_refused"]
        told = engine.told.failed[0][1]
        await wait_until(lambda: story_jobs_final(engine, story.id), within=60)
        # Segments 1 and 3 were generating when it was told: they settled afterwards, as announced.
        assert told == await settled_total(engine, story.id) > 0
    finally:
        await stop(engine)


async def test_two_quick_redo_choices_make_one_regeneration(tmp_path: Path, emulator: DashScopeEmulator) -> None:
    engine = await start_at(tmp_path, emulator.base_url)
    try:
        story, _ = await engine.stories.submit(story_draft(frames=3))
        await wait_until(lambda: delivered(engine, story.id), within=60)
        await engine.stories.wait_idle()
        member = Actor(user_id=10)
        outcomes = await asyncio.gather(
            engine.stories.redo(story.id, 1, member), engine.stories.redo(story.id, 1, member), return_exceptions=True
        )
        redone = [o for o in outcomes if isinstance(o, Job)]
        refused = [o for o in outcomes if isinstance(o, InvalidInput)]
        assert len(redone) == 1 and [r.key for r in refused] == ["story.redo_busy"]
        await wait_until(lambda: delivered(engine, story.id), within=60)
        await wait_until(lambda: story_jobs_final(engine, story.id), within=60)
        await engine.stories.wait_idle()
        assert len([j for j in await all_jobs(engine, story.id) if j.segment_index == 1]) == 2  # once redone
        assert (await story_now(engine, story.id)).generation == 2
        assert emulator.stats()["submissions_accepted"] == 3
        assert story.id not in engine.stories._locks and story.id not in engine.stories._shown
    finally:
        await stop(engine)


class _HeldCreatesProvider:
    """A DashScope stand-in over loopback whose creates are not answered until `answer_creates()`: the segments
    stay SUBMITTING for as long as the test needs, however busy the machine (a fixed create latency let a slow
    cancel arrive after the task had already started, then rightly run and be paid). Tasks then wait PENDING,
    as in a busy provider queue, until cancelled through the cancel route."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.cancelled: set[str] = set()
        self._answer = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def answer_creates(self) -> None:
        self._answer.set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v1/services/aigc/image2video/video-synthesis", self._create)
        app.router.add_get("/api/v1/tasks/{task_id}", self._get)
        app.router.add_post("/api/v1/tasks/{task_id}/cancel", self._cancel)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/api/v1"

    async def stop(self) -> None:
        self._answer.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _create(self, request: web.Request) -> web.Response:
        await self._answer.wait()
        task_id = f"task-{len(self.created) + 1}"
        self.created.append(task_id)
        return web.json_response({"request_id": "r", "output": {"task_id": task_id, "task_status": "PENDING"}})

    async def _get(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        status = "CANCELED" if task_id in self.cancelled else "PENDING"
        output = {"task_id": task_id, "task_status": status, "submit_time": "2026-01-01 08:00:00.000"}
        return web.json_response({"request_id": "r", "output": output})

    async def _cancel(self, request: web.Request) -> web.Response:
        self.cancelled.add(request.match_info["task_id"])
        return web.json_response({"request_id": "r"})


async def test_a_story_cancel_covers_segments_being_submitted(tmp_path: Path) -> None:
    provider = _HeldCreatesProvider()  # creates unanswered: the first segments are SUBMITTING when the member cancels
    await provider.start()
    engine = await start_at(tmp_path, provider.base_url)
    try:
        story, jobs = await engine.stories.submit(story_draft(frames=3))

        async def submitting() -> bool:
            return any(j.state is JobState.SUBMITTING for j in await all_jobs(engine, story.id))

        await wait_until(submitting, within=30)
        await engine.stories.cancel(story.id, Actor(user_id=10))
        assert await submitting()  # still being submitted when the cancel was recorded
        provider.answer_creates()
        await wait_until(lambda: story_jobs_final(engine, story.id), within=60)
        await engine.stories.wait_idle()
        final = await all_jobs(engine, story.id)
        assert [j.state for j in final] == [JobState.CANCELED] * len(jobs)
        assert all(j.charge_state is ChargeState.RELEASED for j in final)
        assert provider.created and provider.cancelled == set(provider.created)  # cancelled there once it had a task
        assert await settled_total(engine, story.id) == 0
        assert engine.told.reasons == ["story.cancelled"] and engine.told.failed[0][1] == 0  # said: nothing paid
        assert story.id not in engine.stories._locks  # per-story state pruned once it ended
    finally:
        await stop(engine)
        await provider.stop()


async def test_a_segment_event_arriving_after_the_story_ended_leaves_no_per_story_state(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    # The worker records a segment final, then tells the router: that event can come after the story ended and
    # after wait_idle (the race the cancel test above lost under load). It must not bring the story's lock back.
    engine = await start_at(tmp_path, emulator.base_url)
    try:
        story, _ = await engine.stories.submit(story_draft(frames=3))
        await engine.stories.cancel(story.id, Actor(user_id=10))
        await wait_until(lambda: story_jobs_final(engine, story.id), within=60)
        await engine.stories.wait_idle()
        assert story.id not in engine.stories._locks and story.id not in engine.stories._shown
        late = (await all_jobs(engine, story.id))[-1]
        await engine.services.worker.notifier.job_failed(late)  # the router the worker talks to
        await asyncio.sleep(0)  # the advance it scheduled has taken its first step (and now awaits the store)
        assert story.id not in engine.stories._locks
        await engine.stories.wait_idle()
        assert story.id not in engine.stories._locks and story.id not in engine.stories._shown
    finally:
        await stop(engine)


async def test_a_redo_refused_by_the_budget_leaves_no_lock_behind(tmp_path: Path, emulator: DashScopeEmulator) -> None:
    engine = await start_at(tmp_path, emulator.base_url)
    try:
        story, _ = await engine.stories.submit(story_draft(frames=3))
        await wait_until(lambda: delivered(engine, story.id), within=60)
        await engine.stories.wait_idle()
        await engine.services.jobs.set_budgets(1, daily=1, monthly=None)  # already spent more than that today
        with pytest.raises(QuotaExceeded):
            await engine.stories.redo(story.id, 1, Actor(user_id=10))
        assert (await story_now(engine, story.id)).state is StoryState.DELIVERED  # nothing more will happen to it
        assert story.id not in engine.stories._locks  # so nothing may stay behind for it in a long-running bot
    finally:
        await stop(engine)


class _HeldThenFailingProvider:
    """A DashScope stand-in over loopback: tasks stay PENDING (and can't be cancelled: no cancel route) until
    `fail_held()`, then FAIL with InternalError (the provider's own trouble); tasks created later succeed."""

    MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64)

    def __init__(self) -> None:
        self.created: list[str] = []
        self.failing: set[str] = set()
        self.held = True
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def fail_held(self) -> None:
        self.held = False

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
        if self.held:
            self.failing.add(task_id)
        return web.json_response({"request_id": "r", "output": {"task_id": task_id, "task_status": "PENDING"}})

    async def _get(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        output: dict[str, Any] = {"task_id": task_id, "submit_time": "2026-01-01 08:00:00.000"}
        if task_id in self.failing:
            if self.held:
                output.update(task_status="PENDING")
            else:
                output.update(task_status="FAILED", code="InternalError", message="the provider gave up")
            return web.json_response({"request_id": "r", "output": output})
        origin = self.base_url.removesuffix("/api/v1")
        output.update(task_status="SUCCEEDED", video_url=f"{origin}/videos/{task_id}.mp4", orig_prompt="p")
        return web.json_response({"request_id": "r", "output": output, "usage": {"video_duration": 5}})

    async def _video(self, request: web.Request) -> web.Response:
        return web.Response(body=self.MP4, content_type="video/mp4")


async def test_a_segment_failing_temporarily_after_a_story_cancel_is_not_sent_again_nor_charged(
    tmp_path: Path,
) -> None:
    provider = _HeldThenFailingProvider()
    await provider.start()
    engine = await start_at(tmp_path, provider.base_url)
    try:
        story, jobs = await engine.stories.submit(story_draft(frames=3))

        async def both_pending() -> bool:
            return all(j.state is JobState.PENDING for j in await all_jobs(engine, story.id))

        await wait_until(both_pending, within=30)
        # The provider refuses the cancel (no such route here): too late to stop at the provider.
        cancelled = await engine.stories.cancel(story.id, Actor(user_id=10))
        assert cancelled.state is StoryState.CANCELED
        provider.fail_held()
        await wait_until(lambda: story_jobs_final(engine, story.id), within=30)
        await engine.stories.wait_idle()
        final = await all_jobs(engine, story.id)
        assert len(final) == len(jobs) == 2
        assert [(j.state, j.charge_state) for j in final] == [(JobState.CANCELED, ChargeState.RELEASED)] * 2
        assert len(provider.created) == 2  # none sent again
        assert engine.services.worker.counters["resubmitted_after_failure"] == 0
    finally:
        await stop(engine)
        await provider.stop()


async def awaiting_choice(engine: Engine, story_id: int) -> bool:
    return (await story_now(engine, story_id)).state is StoryState.AWAITING_CHOICE


async def delivered(engine: Engine, story_id: int) -> bool:
    return (await story_now(engine, story_id)).state is StoryState.DELIVERED
