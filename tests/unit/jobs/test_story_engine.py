"""Stories through the real engine (JobService, scheduler, worker, SQLite) against the DashScope emulator.

A four-frame story is three ordinary segment jobs reserved in one transaction; the joined mp4 keeps the seam
rule of bot.jobs.story.join (sum of the segments' frames minus one per seam, keyframes at the seams).
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest
from PIL import Image, ImageStat

from bot.app import Services
from bot.errors import InvalidInput, NotAllowed, QuotaExceeded
from bot.jobs.models import ChargeState, Job, JobRequest, JobState
from bot.jobs.ports import Video
from bot.jobs.service import Actor
from bot.jobs.story.join import expected_frames, join_segments, seam_indices
from bot.jobs.story.plan import SegmentStatus, StoryState
from bot.jobs.story.service import SegmentLinks, SegmentRouter, StoryDraft, StoryService
from bot.jobs.story.store import Story, StoryStore
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support import corpus
from tests.support.engine import start_engine
from tests.support.recording import RecordingNotifier
from tests.support.waiting import wait_until

FAST = {"pending_s": (0.05, 0.2), "running_s": (0.2, 0.5)}
KEYFRAMES = [(220, 30, 30), (30, 200, 40), (30, 40, 210), (235, 235, 235)]


@dataclass
class RecordingStoryNotifier:
    updates: list[tuple[int, tuple[SegmentStatus, ...]]] = field(default_factory=list)
    # story, generation, the posted file's bytes (as an upload would carry them), partial
    delivered: list[tuple[int, int, bytes, bool]] = field(default_factory=list)
    failed: list[tuple[int, int, int, bool]] = field(default_factory=list)  # story, charged, ready, offer
    reasons: list[str] = field(default_factory=list)

    async def story_updated(self, story: Story, statuses: Sequence[SegmentStatus]) -> None:
        self.updates.append((story.id, tuple(statuses)))

    async def story_deliver(
        self, story: Story, video: Video, *, partial: bool, redelivery: bool, links: SegmentLinks
    ) -> int | None:
        if redelivery and any(s == story.id and g == story.generation for s, g, _, _ in self.delivered):
            return None
        self.delivered.append((story.id, story.generation, video.path.read_bytes(), partial))
        return 1000 + len(self.delivered)

    async def story_failed(
        self, story: Story, *, charged: int, ready: int, can_deliver_partial: bool, reason: str = "story.failed"
    ) -> None:
        self.failed.append((story.id, charged, ready, can_deliver_partial))
        self.reasons.append(reason)


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(seed=11, **FAST))  # type: ignore[arg-type]
    await emu.start()
    yield emu
    await emu.stop()


@dataclass
class Engine:
    services: Services
    stories: StoryService
    told: RecordingStoryNotifier
    jobs_told: RecordingNotifier


async def start(tmp_path: Path, emulator: DashScopeEmulator, **overrides: object) -> Engine:
    recorder = RecordingNotifier()
    router = SegmentRouter(recorder)
    services, _ = await start_engine(tmp_path, emulator.base_url, notifier=router, **overrides)
    stories = StoryService(services.jobs, StoryStore(services.store.database), join_segments)
    told = RecordingStoryNotifier()
    stories.notifier = told
    router.stories = stories
    return Engine(services, stories, told, recorder)


def story_draft(prompt: str = "the light changes", frames: int = 4, guild: int = 1) -> StoryDraft:
    images = [corpus.good_png(320, 240, KEYFRAMES[0])]
    # Later frames in other sizes and aspects: normalised to the first frame's 320x240 at admission.
    images += [corpus.good_png(400 + 40 * k, 300 + 90 * k, KEYFRAMES[k]) for k in range(1, frames)]
    return StoryDraft(
        guild_id=guild,
        channel_id=guild * 100,
        user_id=10,
        locale="en-US",
        request=JobRequest(prompt=prompt, resolution="480P"),
        frames=tuple(images),
    )


def frames_of(data: bytes) -> list[Image.Image]:
    with av.open(io.BytesIO(data), mode="r") as container:
        return [f.to_image() for f in container.decode(video=0)]  # type: ignore[no-untyped-call]


def frame_count(source: Path | bytes) -> int:
    with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), mode="r") as container:
        return sum(1 for _ in container.decode(video=0))


def close_to(image: Image.Image, colour: tuple[int, int, int], tolerance: float = 10) -> bool:
    mean = ImageStat.Stat(image.convert("RGB")).mean
    return all(abs(m - c) <= tolerance for m, c in zip(mean, colour, strict=True))


async def story_now(engine: Engine, story_id: int) -> Story:
    story = await engine.stories.stories.get(story_id)
    assert story is not None
    return story


async def ledger_of(engine: Engine, story_id: int) -> dict[str, int]:
    ids = {j.job_id for j in await engine.stories.stories.segment_jobs(story_id)}
    totals = {"reserve": 0, "settle": 0, "release": 0}
    for entry in await engine.services.store.ledger():
        if entry.job_id in ids:
            totals[entry.kind] += entry.amount
    return totals


async def test_a_four_frame_story_is_one_joined_video_with_keyframes_at_the_seams(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    engine = await start(tmp_path, emulator)
    try:
        story, jobs = await engine.stories.submit(story_draft("dawn | noon | dusk"))
        assert [j.segment_index for j in jobs] == [0, 1, 2] and [j.request.prompt for j in jobs] == [
            "dawn",
            "noon",
            "dusk",
        ]
        assert story.cost_reserved == sum(j.cost_reserved for j in jobs) > 0
        # Every segment job's frames are the normalised keyframes, chained: segment k ends where k+1 starts.
        assert [j.last_frame for j in jobs[:-1]] == [j.first_frame for j in jobs[1:]]
        for ref in story.frames:
            with Image.open(engine.services.jobs.media.frame_path(ref)) as image:
                assert image.size == (320, 240)

        await wait_until(lambda: delivered(engine, story.id), within=90)
        await engine.stories.wait_idle()

        done = await story_now(engine, story.id)
        assert done.state is StoryState.DELIVERED and done.joined_message_id is not None
        assert [(s, g, p) for s, g, _, p in engine.told.delivered] == [(story.id, 1, False)]  # posted once
        assert engine.jobs_told.delivered == []  # no segment posted on its own
        # Posted and recorded: the joined file is not kept (a redo joins again from the segments).
        assert not engine.stories.joined_path(done).exists()
        segment_paths = [Path(j.video_path or "") for j in await jobs_of(engine, story.id)]
        counts = [frame_count(p) for p in segment_paths]
        joined = frames_of(engine.told.delivered[0][2])
        assert len(joined) == expected_frames(counts) == sum(counts) - 2
        assert close_to(joined[0], KEYFRAMES[0]) and close_to(joined[-1], KEYFRAMES[3])
        for k, index in enumerate(seam_indices(counts)):
            assert close_to(joined[index], KEYFRAMES[k + 1]), (k, index)
        # Money: reserved whole, each segment settled, nothing left reserved.
        totals = await ledger_of(engine, story.id)
        assert totals["reserve"] == story.cost_reserved
        assert totals["settle"] + totals["release"] == totals["reserve"]
        assert await engine.stories.stories.charged(story.id) == totals["settle"]
        assert emulator.stats()["submissions_accepted"] == 3
    finally:
        await engine.stories.wait_idle()
        await engine.services.stop()


async def delivered(engine: Engine, story_id: int) -> bool:
    story = await story_now(engine, story_id)
    return story.state is StoryState.DELIVERED


async def jobs_of(engine: Engine, story_id: int) -> list[Job]:
    """Each segment's newest job, in segment order."""
    newest: dict[int, int] = {}
    for j in await engine.stories.stories.segment_jobs(story_id):
        newest[j.segment] = j.job_id
    jobs = [await engine.services.store.get(newest[k]) for k in sorted(newest)]
    assert all(j is not None for j in jobs)
    return [j for j in jobs if j is not None]


async def test_a_story_over_budget_is_refused_whole(tmp_path: Path, emulator: DashScopeEmulator) -> None:
    engine = await start(tmp_path, emulator)
    try:
        quote = engine.stories.quote(JobRequest(prompt="x", resolution="480P"), 4)
        # Room for two segments but not three: nothing is reserved, no job exists.
        await engine.services.jobs.set_budgets(1, daily=quote.cost_each * 2 + 1, monthly=None)
        with pytest.raises(QuotaExceeded):
            await engine.stories.submit(story_draft())
        assert await engine.services.store.all_jobs() == []
        assert await engine.services.store.ledger() == []
    finally:
        await engine.services.stop()


async def test_a_prompt_count_that_does_not_match_names_both_numbers(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    engine = await start(tmp_path, emulator)
    try:
        with pytest.raises(InvalidInput) as caught:
            await engine.stories.submit(story_draft("one | two"))
        assert caught.value.key == "story.prompt_count"
        assert caught.value.params == {"prompts": 2, "segments": 3}
    finally:
        await engine.services.stop()


async def test_a_segment_failing_twice_is_retried_once_then_delivered_as_far_as_it_got_on_request(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    engine = await start(tmp_path, emulator)
    try:
        story, _ = await engine.stories.submit(story_draft("dawn | FAIL_CONTENT noon | dusk"))
        await wait_until(lambda: awaiting(engine, story.id), within=90)
        await engine.stories.wait_idle()

        jobs = await engine.stories.stories.segment_jobs(story.id)
        middle = [j for j in jobs if j.segment == 1]
        assert [j.state for j in middle] == [JobState.FAILED, JobState.FAILED]  # retried once, not more
        retried = await engine.services.store.get(middle[1].job_id)
        first_try = await engine.services.store.get(middle[0].job_id)
        assert retried is not None and first_try is not None
        assert retried.request.seed is not None and retried.request.seed != first_try.request.seed
        charged = await engine.stories.stories.charged(story.id)
        assert engine.told.failed == [(story.id, charged, 1, True)]  # what was charged, and the offer
        assert engine.told.delivered == []

        with pytest.raises(NotAllowed):
            await engine.stories.deliver_partial(story.id, Actor(user_id=999))
        await engine.stories.deliver_partial(story.id, Actor(user_id=10))
        await engine.stories.wait_idle()

        done = await story_now(engine, story.id)
        assert done.state is StoryState.PARTIAL
        assert [(s, p) for s, _, _, p in engine.told.delivered] == [(story.id, True)]
        first_segment = (await jobs_of(engine, story.id))[0]
        assert frame_count(engine.told.delivered[0][2]) == frame_count(Path(first_segment.video_path or ""))
        # Failed segments released their reservations; the rest settled; nothing stays reserved.
        all_jobs = [await engine.services.store.get(j.job_id) for j in jobs]
        assert all(j is not None and j.charge_state is not ChargeState.RESERVED for j in all_jobs)
        totals = await ledger_of(engine, story.id)
        assert totals["settle"] + totals["release"] == totals["reserve"]
    finally:
        await engine.stories.wait_idle()
        await engine.services.stop()


async def awaiting(engine: Engine, story_id: int) -> bool:
    return (await story_now(engine, story_id)).state is StoryState.AWAITING_CHOICE


async def test_redo_segment_runs_it_again_and_re_joins(tmp_path: Path, emulator: DashScopeEmulator) -> None:
    engine = await start(tmp_path, emulator)
    try:
        story, _ = await engine.stories.submit(story_draft(frames=3))
        await wait_until(lambda: delivered(engine, story.id), within=90)
        await engine.stories.wait_idle()
        before = await jobs_of(engine, story.id)

        redo = await engine.stories.redo(story.id, 1, Actor(user_id=10))

        assert redo.segment_index == 1 and redo.request.seed != before[1].request.seed
        assert redo.charge_state is ChargeState.RESERVED and redo.cost_reserved > 0  # budgeted like a new job
        await wait_until(lambda: posted_generation(engine, story.id, 2), within=90)
        await engine.stories.wait_idle()
        assert [(s, g) for s, g, _, _ in engine.told.delivered] == [(story.id, 1), (story.id, 2)]
        after = await jobs_of(engine, story.id)
        assert after[0].id == before[0].id and after[1].id == redo.id
        joined = engine.told.delivered[1][2]
        # The emulator renders the same frames alike whatever the seed: the new join is known by its inputs.
        assert after[1].video_path != before[1].video_path and after[1].request.seed == redo.request.seed
        counts = [frame_count(Path(j.video_path or "")) for j in after]
        assert frame_count(joined) == expected_frames(counts)
        assert emulator.stats()["submissions_accepted"] == 3
    finally:
        await engine.stories.wait_idle()
        await engine.services.stop()


async def posted_generation(engine: Engine, story_id: int, generation: int) -> bool:
    return (await story_now(engine, story_id)).posted_generation >= generation


async def test_a_cancelled_story_releases_what_was_not_spent_and_is_never_posted(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    engine = await start(tmp_path, emulator)
    try:
        story, jobs = await engine.stories.submit(story_draft())
        with pytest.raises(NotAllowed):
            await engine.stories.cancel(story.id, Actor(user_id=999))
        cancelled = await engine.stories.cancel(story.id, Actor(user_id=10))
        assert cancelled.state is StoryState.CANCELED

        async def all_final() -> bool:
            return all(j.state.is_final for j in await engine.stories.stories.segment_jobs(story.id))

        await wait_until(all_final, within=60)
        await engine.stories.wait_idle()
        final = [await engine.services.store.get(j.id) for j in jobs]
        assert any(j is not None and j.state is JobState.CANCELED for j in final)  # the queued ones never ran
        assert all(j is not None and j.charge_state is not ChargeState.RESERVED for j in final)
        totals = await ledger_of(engine, story.id)
        assert totals["settle"] + totals["release"] == totals["reserve"] == story.cost_reserved
        assert totals["settle"] == await engine.stories.stories.charged(story.id)
        assert engine.told.reasons == ["story.cancelled"] and engine.told.delivered == []
        assert (await story_now(engine, story.id)).state is StoryState.CANCELED
        with pytest.raises(InvalidInput):
            await engine.stories.cancel(story.id, Actor(user_id=10))  # once
    finally:
        await engine.stories.wait_idle()
        await engine.services.stop()


async def test_a_redo_needs_the_other_segments_and_a_broken_one_fails_the_join_with_what_was_charged(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    engine = await start(tmp_path, emulator)
    try:
        story, _ = await engine.stories.submit(story_draft(frames=4))
        await wait_until(lambda: delivered(engine, story.id), within=90)
        await engine.stories.wait_idle()
        segments = await jobs_of(engine, story.id)

        kept = Path(segments[2].video_path or "").read_bytes()
        Path(segments[2].video_path or "").unlink()
        with pytest.raises(InvalidInput) as caught:
            await engine.stories.redo(story.id, 0, Actor(user_id=10))
        assert caught.value.key == "story.videos_gone"
        assert len(await engine.stories.stories.segment_jobs(story.id)) == 3  # nothing admitted

        Path(segments[2].video_path or "").write_bytes(b"\x00\x00\x00\x18ftypmp42" + kept[-4096:])  # unreadable
        await engine.stories.redo(story.id, 0, Actor(user_id=10))
        await wait_until(lambda: failed(engine, story.id), within=90)
        await engine.stories.wait_idle()
        assert engine.told.reasons == ["story.join_failed"]
        charged = await engine.stories.stories.charged(story.id)
        assert engine.told.failed[-1][1] == charged > 0
        assert len(engine.told.delivered) == 1  # only the first join was posted
    finally:
        await engine.stories.wait_idle()
        await engine.services.stop()


async def failed(engine: Engine, story_id: int) -> bool:
    return (await story_now(engine, story_id)).state is StoryState.FAILED


async def test_a_story_on_postgresql_is_admitted_whole_and_delivered(
    tmp_path: Path, emulator: DashScopeEmulator, postgres_url: str
) -> None:
    engine = await start(tmp_path, emulator, KF2V_DATABASE_URL=postgres_url)
    try:
        assert engine.services.store.dialect == "postgresql"
        story, jobs = await engine.stories.submit(story_draft("dawn | noon", frames=3))
        assert [j.story_id for j in jobs] == [story.id, story.id] and [j.segment_index for j in jobs] == [0, 1]
        await wait_until(lambda: delivered(engine, story.id), within=90)
        await engine.stories.wait_idle()
        counts = [frame_count(Path(j.video_path or "")) for j in await jobs_of(engine, story.id)]
        assert len(frames_of(engine.told.delivered[0][2])) == expected_frames(counts)
        totals = await ledger_of(engine, story.id)
        assert totals["reserve"] == story.cost_reserved == totals["settle"] + totals["release"]
    finally:
        await engine.stories.wait_idle()
        await engine.services.stop()
