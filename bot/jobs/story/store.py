"""Stories in the job database (migration 0006), on bot.jobs.db's Database interface (SQLite and PostgreSQL).

The segment jobs themselves are ordinary jobs (JobStore); this holds the story row and the markers that make
the join and the post happen once per generation, across restarts and processes: each is claimed by an UPDATE
guarded on the previous value, and only the caller whose UPDATE changed a row goes ahead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.jobs.db import Database, Row, Transaction
from bot.jobs.models import JobState
from bot.jobs.story.plan import FINAL_STORY_STATES, SegmentJob, StoryState

# Owns the stories table; reads its segments' rows in jobs (their money, states and videos).
TABLES = frozenset({"stories"})
USES = frozenset({"jobs"})


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class NewStory:
    """A story about to be admitted (its row; the segment jobs are inserted alongside)."""

    guild_id: int
    channel_id: int
    user_id: int
    locale: str
    model: str
    resolution: str
    seed: int | None
    prompts: tuple[str, ...]
    frames: tuple[str, ...]  # media names of the normalised keyframes, in order
    cost_reserved: int

    @property
    def segments(self) -> int:
        """N keyframes make N-1 segments."""
        return len(self.frames) - 1


@dataclass(frozen=True, slots=True)
class Story:
    """A stored story: who, where, its options, its state and its join/post markers."""

    id: int
    guild_id: int
    channel_id: int
    user_id: int
    locale: str
    thread_id: int | None
    status_message_id: int | None
    model: str
    resolution: str
    seed: int | None
    prompts: tuple[str, ...]
    frames: tuple[str, ...]
    segments: int
    state: StoryState
    cost_reserved: int
    partial_opt_in: bool
    generation: int
    joined_generation: int
    posted_generation: int
    joined_path: str | None
    joined_message_id: int | None
    error_key: str | None
    deleted_by: int | None = None  # who took the posted video down (Delete, issue 19), and when
    deleted_at: str | None = None

    @property
    def final(self) -> bool:
        """Nothing more will happen unless the user acts (a redo, or the partial choice)."""
        return self.state in FINAL_STORY_STATES

    @property
    def join_due(self) -> bool:
        """This generation's segments have not been joined yet."""
        return self.joined_generation < self.generation

    @property
    def post_due(self) -> bool:
        """Joined, not yet posted."""
        return self.joined_generation == self.generation and self.posted_generation < self.generation


def _story(row: Row) -> Story:
    return Story(
        id=int(row["id"]),
        guild_id=int(row["guild_id"]),
        channel_id=int(row["channel_id"]),
        user_id=int(row["user_id"]),
        locale=str(row["locale"]),
        thread_id=_maybe_int(row["thread_id"]),
        status_message_id=_maybe_int(row["status_message_id"]),
        model=str(row["model"]),
        resolution=str(row["resolution"]),
        seed=_maybe_int(row["seed"]),
        prompts=tuple(json.loads(row["prompts"])),
        frames=tuple(json.loads(row["frames"])),
        segments=int(row["segments"]),
        state=StoryState(row["state"]),
        cost_reserved=int(row["cost_reserved"]),
        partial_opt_in=bool(row["partial_opt_in"]),
        generation=int(row["generation"]),
        joined_generation=int(row["joined_generation"]),
        posted_generation=int(row["posted_generation"]),
        joined_path=row["joined_path"],
        joined_message_id=_maybe_int(row["joined_message_id"]),
        error_key=row["error_key"],
        deleted_by=_maybe_int(row["deleted_by"]),
        deleted_at=row["deleted_at"],
    )


def _maybe_int(value: Any) -> int | None:
    return None if value is None else int(value)


class StoryStore:
    """The stories table and the story side of the jobs table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    async def insert(tx: Transaction, story: NewStory) -> int:
        """The story row, inside the caller's admission transaction (which also inserts its segment jobs)."""
        if len(story.prompts) != story.segments:
            raise ValueError(f"{len(story.prompts)} prompts for {story.segments} segments")
        now = _now()
        rows = await tx.fetch_all(
            """INSERT INTO stories (guild_id, channel_id, user_id, locale, model, resolution, seed, prompts, frames,
                   segments, state, cost_reserved, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            (
                story.guild_id,
                story.channel_id,
                story.user_id,
                story.locale,
                story.model,
                story.resolution,
                story.seed,
                json.dumps(list(story.prompts), ensure_ascii=False),
                json.dumps(list(story.frames)),
                story.segments,
                StoryState.RUNNING.value,
                story.cost_reserved,
                now,
                now,
            ),
        )
        return int(rows[0]["id"])

    async def charged(self, story_id: int, *, in_flight: Sequence[JobState] = ()) -> int:
        """What the story's jobs have been charged so far (milli-CNY), retries and redos included; plus the
        reservation of each job still reserved in one of the `in_flight` states (what it costs at most once
        it is generated: those that run on)."""
        states = [s.value for s in in_flight] or [""]
        marks = ", ".join("?" * len(states))
        row = await self._db.fetch_one(
            f"""SELECT SUM(CASE WHEN charge_state = 'settled' THEN cost_settled ELSE 0 END) AS charged,
                      SUM(CASE WHEN charge_state = 'reserved' AND state IN ({marks}) THEN cost_reserved ELSE 0 END)
                          AS in_flight
               FROM jobs WHERE story_id = ?""",  # noqa: S608 - placeholders only
            (*states, story_id),
        )
        if row is None:
            return 0
        return int(row["charged"] or 0) + int(row["in_flight"] or 0)

    async def get(self, story_id: int) -> Story | None:
        """The story, or None."""
        row = await self._db.fetch_one("SELECT * FROM stories WHERE id = ?", (story_id,))
        return None if row is None else _story(row)

    async def unfinished(self) -> list[Story]:
        """Stories a (re)started bot must carry on: not final, or final with a join or post still due."""
        rows = await self._db.fetch_all(
            """SELECT * FROM stories
               WHERE state NOT IN (?, ?, ?, ?) OR joined_generation < generation OR posted_generation < generation
               ORDER BY id""",
            tuple(s.value for s in sorted(FINAL_STORY_STATES)),
        )
        return [_story(row) for row in rows]

    async def segment_jobs(self, story_id: int) -> list[SegmentJob]:
        """Every job of the story (retries and redos too), oldest first."""
        rows = await self._db.fetch_all(
            "SELECT id, segment_index, state, video_path FROM jobs WHERE story_id = ? ORDER BY id", (story_id,)
        )
        return [
            SegmentJob(int(r["id"]), int(r["segment_index"]), JobState(r["state"]), bool(r["video_path"])) for r in rows
        ]

    async def current_videos(self, story_id: int) -> dict[int, str]:
        """Segment -> the video path of its newest delivered job."""
        rows = await self._db.fetch_all(
            """SELECT segment_index, video_path FROM jobs
               WHERE story_id = ? AND state = ? AND video_path IS NOT NULL ORDER BY id""",
            (story_id, JobState.DELIVERED.value),
        )
        return {int(r["segment_index"]): str(r["video_path"]) for r in rows}

    async def mark_deleted(self, story_id: int, user_id: int) -> Story | None:
        """Record that `user_id` took the story's video down; None when it already was (the first press wins)."""
        async with self._db.transaction() as db:
            changed = await db.execute(
                "UPDATE stories SET deleted_by = ?, deleted_at = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
                (user_id, _now(), _now(), story_id),
            )
            row = await db.fetch_one("SELECT * FROM stories WHERE id = ?", (story_id,)) if changed else None
        return _story(row) if row is not None else None

    async def set_messages(self, story_id: int, *, thread_id: int | None, status_message_id: int | None) -> None:
        """Record the story's thread and status message."""
        await self._db.execute(
            "UPDATE stories SET thread_id = ?, status_message_id = ?, updated_at = ? WHERE id = ?",
            (thread_id, status_message_id, _now(), story_id),
        )

    async def set_state(
        self, story_id: int, state: StoryState, *, expect: StoryState | None = None, error_key: str | None = None
    ) -> bool:
        """Move the story; with `expect`, only from that state. True when this call moved it."""
        finished = _now() if state in FINAL_STORY_STATES else None
        sql = "UPDATE stories SET state = ?, error_key = COALESCE(?, error_key), updated_at = ?, finished_at = ?"
        params: list[Any] = [state.value, error_key, _now(), finished]
        sql += " WHERE id = ?"
        params.append(story_id)
        if expect is not None:
            sql += " AND state = ?"
            params.append(expect.value)
        return await self._db.execute(sql, tuple(params)) == 1

    async def opt_in_partial(self, story_id: int) -> bool:
        """The user chose "deliver as far as it got"; True only for the first press while the story waits."""
        changed = await self._db.execute(
            "UPDATE stories SET partial_opt_in = 1, updated_at = ? WHERE id = ? AND state = ? AND partial_opt_in = 0",
            (_now(), story_id, StoryState.AWAITING_CHOICE.value),
        )
        return changed == 1

    async def mark_joined(self, story_id: int, generation: int, path: str) -> bool:
        """Record the join of `generation`; False when it was already recorded (or the story moved on)."""
        changed = await self._db.execute(
            """UPDATE stories SET joined_generation = ?, joined_path = ?, updated_at = ?
               WHERE id = ? AND generation = ? AND joined_generation < ?""",
            (generation, path, _now(), story_id, generation, generation),
        )
        return changed == 1

    async def mark_posted(self, story_id: int, generation: int, message_id: int | None, state: StoryState) -> bool:
        """Record the post of `generation` and the story's final state; once per generation."""
        changed = await self._db.execute(
            """UPDATE stories SET posted_generation = ?, joined_message_id = ?, state = ?, updated_at = ?,
                   finished_at = ?
               WHERE id = ? AND generation = ? AND joined_generation = ? AND posted_generation < ?""",
            (generation, message_id, state.value, _now(), _now(), story_id, generation, generation, generation),
        )
        return changed == 1

    @staticmethod
    async def newest_segment_job(tx: Transaction, story_id: int, segment: int) -> int | None:
        """The id of the segment's newest job, read inside a retry's admission transaction; None if it has none."""
        row = await tx.fetch_one(
            "SELECT MAX(id) AS newest FROM jobs WHERE story_id = ? AND segment_index = ?", (story_id, segment)
        )
        return None if row is None or row["newest"] is None else int(row["newest"])

    @staticmethod
    async def next_generation(tx: Transaction, story_id: int, *, expect_generation: int) -> int | None:
        """A redone segment: the story runs again and its next join and post are due (inside the redo's
        admission transaction). None when the story is no longer the delivered `expect_generation` (another
        Redo took it first)."""
        row = await tx.fetch_one(
            "UPDATE stories SET generation = generation + 1, state = ?, updated_at = ?, finished_at = NULL "
            "WHERE id = ? AND generation = ? AND state = ? RETURNING generation",
            (StoryState.RUNNING.value, _now(), story_id, expect_generation, StoryState.DELIVERED.value),
        )
        return None if row is None else int(row["generation"])
