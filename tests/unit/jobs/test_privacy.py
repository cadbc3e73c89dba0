"""Privacy (issue 19) on both engines: forgetting a member leaves no column of any table, no file of the media
folder and no log line naming them, keeps the ledger's amounts and other members' data, lets jobs in flight
finish first; the retention sweep anonymises only what finished before the cut-off."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.catalog import load_catalog
from bot.jobs.db import Database, SqliteDatabase, Transaction
from bot.jobs.media import MediaStore
from bot.jobs.models import Job, JobRequest, JobState, NewJob
from bot.jobs.privacy.service import PrivacyService
from bot.jobs.privacy.store import ANONYMOUS_USER, PrivacyStore
from bot.jobs.quota import BudgetService, Defaults
from bot.jobs.store import JobStore
from bot.jobs.story.plan import StoryState
from bot.jobs.story.store import NewStory, StoryStore
from bot.jobs.uploads import CachedUpload, DatabaseUploadStore
from bot.logs import TextFormatter
from tests.support import corpus
from tests.support.postgres import OpenDatabase
from tests.support.scan import files_naming, rows_naming

ALICE = 731_000_111_222_333_444  # snowflake-sized, so a match can't be a coincidence
BOB = 731_000_555_666_777_888
ALICE_PROMPT = "qz7 Alice's lighthouse at dusk 灯塔"
BOB_PROMPT = "Bob's red kite over the dunes"
GUILD = 42


@pytest.fixture
async def database(open_database_of_engine: OpenDatabase) -> Database:
    return await open_database_of_engine()


class Bench:
    """A store, the media folder and the privacy service over one database."""

    def __init__(self, db: Database, root: Path, retention_days: float = 30) -> None:
        self.db = db
        self.store = JobStore(db)
        self.media = MediaStore(root / "media")
        defaults = Defaults(100_000, 1_000_000, 1000, 1000)
        self.budget = BudgetService(self.store, load_catalog(), defaults, ZoneInfo("UTC"), region="beijing")
        self.privacy = PrivacyService(PrivacyStore(db), self.media, retention_days)

    async def admit(self, user: int, prompt: str, color: tuple[int, int, int]) -> Job:
        first, _ = self.media.put_frame(corpus.good_png(64, 64, color), "image/png")
        inverse = (255 - color[0], 255 - color[1], 255 - color[2])
        last, _ = self.media.put_frame(corpus.good_png(64, 64, inverse), "image/png")
        request = JobRequest(
            model="wan2.2-kf2v-flash", resolution="720P", prompt=prompt, negative_prompt=f"not {prompt}"
        )
        new = NewJob(guild_id=GUILD, channel_id=5, user_id=user, locale="en-US", request=request,
                     first_frame=first, last_frame=last)  # fmt: skip
        return await self.budget.admit(new)

    async def deliver(self, job: Job, *, when: datetime | None = None) -> Job:
        await self.store.transition(job.id, JobState.SUBMITTING, account="acct", now=when)
        await self.store.transition(job.id, JobState.PENDING, task_id=f"task-{job.id}", now=when)
        await self.store.transition(
            job.id, JobState.SUCCEEDED, settle=job.cost_reserved, actual_prompt=f"{job.request.prompt}, cinematic",
            now=when,
        )  # fmt: skip
        video = self.media.video_path(job.id)
        video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + job.request.prompt.encode())
        return await self.store.transition(job.id, JobState.DELIVERED, video_path=str(video), now=when)

    async def fail(self, job: Job) -> Job:
        await self.store.transition(job.id, JobState.SUBMITTING, account="acct")
        return await self.store.transition(
            job.id, JobState.FAILED, release=True, error_code="DataInspectionFailed",
            error_detail=f"Input data may contain inappropriate content: {job.request.prompt}",
            detail=f"provider said: {job.request.prompt}",
        )  # fmt: skip


def job_files(media: MediaStore, job: Job) -> list[Path]:
    return [media.frame_path(job.first_frame), media.frame_path(job.last_frame or ""), media.video_path(job.id)]


async def test_forget_leaves_no_trace_of_the_member_and_keeps_the_money(
    database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bench = Bench(database, tmp_path)
    delivered = await bench.deliver(await bench.admit(ALICE, ALICE_PROMPT, (200, 10, 10)))
    failed = await bench.fail(await bench.admit(ALICE, ALICE_PROMPT + " again", (10, 200, 10)))
    in_flight = await bench.admit(ALICE, ALICE_PROMPT + " third", (10, 10, 200))
    bobs = await bench.deliver(await bench.admit(BOB, BOB_PROMPT, (90, 90, 90)))
    await bench.store.add_content_rule(GUILD, "dragon", "dragon", added_by=ALICE, limit=200)
    uploads = DatabaseUploadStore(database)
    digest = delivered.first_frame.rsplit("/", 1)[-1].split(".")[0]
    await uploads.save_upload(
        CachedUpload(digest, "acct", "wan2.2-kf2v-flash", "oss://x/y.png", datetime.now(UTC) + timedelta(days=2), 9)
    )
    ledger_before = [(e.job_id, e.guild_id, e.kind, e.amount) for e in await bench.store.ledger()]
    spend_before = await bench.store.spend_by_guild()
    texts = [ALICE_PROMPT]
    assert await rows_naming(database, ALICE, texts)  # the scan finds the member before (it can fail)
    alice_files = job_files(bench.media, delivered) + job_files(bench.media, failed)[:2]
    assert all(p.exists() for p in alice_files)

    caplog.set_level(logging.INFO)
    caplog.clear()
    outcome = await bench.privacy.forget(ALICE)
    assert (outcome.jobs, outcome.pending) == (2, 1)

    # In flight: kept (its delivery needs who asked), marked; the rest of the member is gone already.
    waiting = await bench.store.get(in_flight.id)
    assert waiting is not None and waiting.user_id == ALICE and waiting.anonymised_at is None
    assert all(not p.exists() for p in alice_files)
    assert bench.media.frame_path(in_flight.first_frame).exists()  # the queued job still needs its frames
    await bench.privacy.sweep()
    assert (await bench.store.get(in_flight.id)).user_id == ALICE  # type: ignore[union-attr]  # not finished yet

    await bench.deliver(in_flight)  # it finishes and is delivered, then the sweep erases it
    erased = await bench.privacy.sweep()
    assert erased.jobs == 1 and erased.pending == 0

    assert await rows_naming(database, ALICE, texts) == []
    if isinstance(database, SqliteDatabase):  # the file itself, WAL included: no old row version left behind
        assert files_naming(database.path.parent, [ALICE_PROMPT.encode()]) == []
    assert files_naming(bench.media.root, [ALICE_PROMPT.encode(), str(ALICE).encode()]) == []
    assert not bench.media.frame_path(in_flight.first_frame).exists()
    assert await uploads.find_upload(digest, "acct", "wan2.2-kf2v-flash") is None
    lines = [TextFormatter().format(r) for r in caplog.records]
    assert lines and not [line for line in lines if str(ALICE) in line or "lighthouse" in line]

    # The money stays, whole: every ledger row and the guild's spend; the anonymised rows keep their costs.
    assert [(e.job_id, e.guild_id, e.kind, e.amount) for e in await bench.store.ledger()][: len(ledger_before)] == (
        ledger_before
    )
    assert (await bench.store.spend_by_guild())[GUILD] == spend_before[GUILD] + in_flight.cost_reserved
    gone = await bench.store.get(delivered.id)
    assert gone is not None and gone.user_id == ANONYMOUS_USER and gone.request.prompt == ""
    assert gone.cost_settled == delivered.cost_settled and gone.anonymised_at is not None
    # Bob is untouched: his row, his prompt, his files; the rule stays without who added it.
    bob = await bench.store.get(bobs.id)
    assert bob is not None and bob.user_id == BOB and bob.request.prompt == BOB_PROMPT
    assert all(p.exists() for p in job_files(bench.media, bobs))
    assert [r.phrase for r in await bench.store.content_rules(GUILD)] == ["dragon"]
    assert await bench.store.top_spenders(GUILD, bob.period_month) == [(BOB, 1, bob.cost_settled)]


async def test_retention_anonymises_only_jobs_finished_before_the_cut_off(database: Database, tmp_path: Path) -> None:
    bench = Bench(database, tmp_path, retention_days=30)
    old_time = datetime.now(UTC) - timedelta(days=31)
    old = await bench.deliver(await bench.admit(ALICE, ALICE_PROMPT, (1, 2, 3)), when=old_time)
    recent = await bench.deliver(await bench.admit(ALICE, "a recent one", (4, 5, 6)))
    queued = await bench.admit(BOB, BOB_PROMPT, (7, 8, 9))
    spend_before = await bench.store.spend_by_guild()

    done = await bench.privacy.sweep()

    assert done.jobs == 1
    expired, kept, waiting = [await bench.store.get(j.id) for j in (old, recent, queued)]
    assert expired is not None and expired.user_id == ANONYMOUS_USER and expired.request.prompt == ""
    assert expired.request.negative_prompt is None and expired.actual_prompt is None and expired.video_path is None
    assert not bench.media.video_path(old.id).exists()
    assert kept is not None and kept.user_id == ALICE and kept.request.prompt == "a recent one"
    assert waiting is not None and waiting.request.prompt == BOB_PROMPT
    assert await bench.store.spend_by_guild() == spend_before
    assert (await bench.privacy.sweep()).jobs == 0  # each row once


async def test_who_deleted_a_result_is_forgotten_too(database: Database, tmp_path: Path) -> None:
    """Issue 19's Delete records who took a video down; that may be another member (a manager) than the requester."""
    bench = Bench(database, tmp_path)
    bobs = await bench.deliver(await bench.admit(BOB, BOB_PROMPT, (90, 90, 90)))
    marked = await bench.store.mark_result_deleted(bobs.id, ALICE)  # Alice, a manager, took Bob's video down
    assert marked is not None and marked.deleted_by == ALICE
    assert await rows_naming(database, ALICE, [])  # the scan finds her (it can fail)
    await bench.privacy.forget(ALICE)
    assert await rows_naming(database, ALICE, []) == []
    bob = await bench.store.get(bobs.id)
    assert bob is not None and bob.deleted_by == ANONYMOUS_USER and bob.deleted_at is not None and bob.user_id == BOB


async def story_of(bench: Bench, stories: StoryStore, user: int, prompts: tuple[str, str]) -> tuple[int, list[Job]]:
    """A two-segment story admitted as the story service does: its row and its segment jobs in one transaction."""
    frames = [bench.media.put_frame(corpus.good_png(64, 64, (i * 70, 20, 20)), "image/png")[0] for i in range(3)]
    story_id = 0

    async def prepare(tx: Transaction) -> list[NewJob]:
        nonlocal story_id
        story_id = await stories.insert(tx, NewStory(
            guild_id=GUILD, channel_id=5, user_id=user, locale="en-US", model="wan2.2-kf2v-flash", resolution="720P",
            seed=None, prompts=prompts, frames=tuple(frames), cost_reserved=2000,
        ))  # fmt: skip
        return [
            NewJob(guild_id=GUILD, channel_id=5, user_id=user, locale="en-US",
                   request=JobRequest(model="wan2.2-kf2v-flash", resolution="720P", prompt=prompts[k]),
                   first_frame=frames[k], last_frame=frames[k + 1], story_id=story_id, segment_index=k)
            for k in range(2)
        ]  # fmt: skip

    periods = bench.budget.periods()
    jobs = await bench.store.create_jobs(
        GUILD, user, cost=1000, period_day=periods.day, period_month=periods.month, admit=lambda u, p: None,
        prepare=prepare,
    )  # fmt: skip
    return story_id, jobs


async def test_forget_waits_for_an_open_story_and_erases_a_finished_one(database: Database, tmp_path: Path) -> None:
    bench = Bench(database, tmp_path)
    stories = StoryStore(database)
    done_id, done_jobs = await story_of(bench, stories, ALICE, ("qz7 dawn over the lighthouse", "qz7 the beam fades"))
    for segment in done_jobs:
        await bench.deliver(segment)
    joined = bench.media.videos / f"story-{done_id}-1.mp4"
    joined.write_bytes(b"joined")
    assert await stories.mark_joined(done_id, 1, str(joined))
    assert await stories.mark_posted(done_id, 1, 99, StoryState.DELIVERED)
    open_id, open_jobs = await story_of(bench, stories, ALICE, ("qz7 fog rolls in", "qz7 the lighthouse vanishes"))
    await bench.deliver(open_jobs[0])  # one segment done, the story still running
    texts = ["qz7 dawn", "qz7 fog", "lighthouse"]

    outcome = await bench.privacy.forget(ALICE)

    assert (outcome.jobs, outcome.stories, outcome.pending) == (2, 1, 3)  # the open story and both its segments
    assert not joined.exists()
    finished = await stories.get(done_id)
    assert finished is not None and finished.user_id == ANONYMOUS_USER and finished.prompts == ()
    waiting = await stories.get(open_id)
    assert waiting is not None and waiting.user_id == ALICE and waiting.prompts[0] == "qz7 fog rolls in"
    kept = await bench.store.get(open_jobs[0].id)  # a done segment of an open story: a redo may still need it
    assert kept is not None and kept.request.prompt == "qz7 fog rolls in"
    assert bench.media.video_path(open_jobs[0].id).exists()

    await bench.deliver(open_jobs[1])
    await bench.privacy.sweep()
    assert (await bench.store.get(open_jobs[1].id)).user_id == ALICE  # type: ignore[union-attr]  # story not ended
    assert await stories.set_state(open_id, StoryState.DELIVERED)
    erased = await bench.privacy.sweep()
    assert (erased.jobs, erased.stories, erased.pending) == (2, 1, 0)
    assert await rows_naming(database, ALICE, texts) == []
    assert files_naming(bench.media.root, [t.encode() for t in texts]) == []
