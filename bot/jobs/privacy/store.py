"""The privacy statements of the job database (migration 0007), on bot.jobs.db's Database (SQLite and PostgreSQL).

Anonymising a job blanks everything a member typed or uploaded (prompts, the provider's rewrite of them, the
provider's error text, the media references) and sets its user id to 0; its guild, model, state, costs, periods
and times stay, so budgets and spend reports add up as before. The ledger is never touched: it holds job ids,
guild ids and amounts, no person. A job or story still in flight is only marked (`erase_requested`): delivery
needs to know whom to answer, so it finishes first and a later sweep erases it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.jobs.db import Database, Row, SqliteDatabase, Transaction
from bot.jobs.models import FINAL_STATES
from bot.jobs.story.plan import FINAL_STORY_STATES

# A cross-aggregate process, documented above: it owns no table and anonymises rows of these, in one transaction
# (content_rules lose who added them; a forgotten member's temporary uploads go).
TABLES: frozenset[str] = frozenset()
USES = frozenset({"jobs", "job_events", "stories", "content_rules", "uploads"})

ANONYMOUS_USER = 0  # what a forgotten or expired row's user id becomes (no Discord id is 0)
_FINAL_JOBS = tuple(sorted(s.value for s in FINAL_STATES))
_FINAL_STORIES = tuple(sorted(s.value for s in FINAL_STORY_STATES))
_CHUNK = 500  # ids per IN (...) list: well under SQLite's and asyncpg's parameter limits


@dataclass(slots=True)
class Erasure:
    """What one privacy step changed, and the files it leaves for the caller to remove."""

    jobs: int = 0  # jobs anonymised now
    stories: int = 0  # stories anonymised now
    pending: int = 0  # jobs and stories in flight, marked to be erased once they finish
    job_ids: list[int] = field(default_factory=list)  # anonymised jobs (their videos are job-<id>.mp4)
    story_ids: list[int] = field(default_factory=list)  # anonymised stories (story-<id>-<generation>.mp4)
    media: set[str] = field(default_factory=set)  # media references the anonymised rows held

    def add(self, other: Erasure) -> None:
        """Fold another step's result into this one."""
        self.jobs += other.jobs
        self.stories += other.stories
        self.pending += other.pending
        self.job_ids += other.job_ids
        self.story_ids += other.story_ids
        self.media |= other.media


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _job_media(row: Row) -> set[str]:
    return {str(ref) for ref in (row["first_frame"], row["last_frame"], row["audio"], row["first_clip"]) if ref}


def _story_media(row: Row) -> set[str]:
    try:
        return {str(ref) for ref in json.loads(row["frames"] or "[]") if ref}
    except ValueError:
        return set()


# Column lists are fixed text, never user input; every value goes through a placeholder.
_JOB_COLUMNS = "id, state, story_id, first_frame, last_frame, audio, first_clip"
_STORY_COLUMNS = "id, state, frames"


class PrivacyStore:
    """Forget a member, erase what was waiting for its jobs to finish, anonymise what outlived the retention."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def forget_user(self, user_id: int, now: datetime) -> Erasure:
        """Anonymise every finished job and story of `user_id` now and mark the ones in flight, in one transaction.

        A job of a story that has not ended counts as in flight (the story may still redo or join it). Content
        rules a manager added keep the phrase but lose who added it.
        """

        async def work(tx: Transaction) -> Erasure:
            stories = await tx.fetch_all(
                f"SELECT {_STORY_COLUMNS} FROM stories WHERE user_id = ? AND anonymised_at IS NULL",  # noqa: S608
                (user_id,),
            )
            open_stories = {int(r["id"]) for r in stories if r["state"] not in _FINAL_STORIES}
            jobs = await tx.fetch_all(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE user_id = ? AND anonymised_at IS NULL",  # noqa: S608
                (user_id,),
            )
            open_parents = await self._open_stories(tx, {int(r["story_id"]) for r in jobs if r["story_id"]})
            flying = {
                int(r["id"])
                for r in jobs
                if r["state"] not in _FINAL_JOBS or (r["story_id"] is not None and int(r["story_id"]) in open_parents)
            }
            erasure = await self._anonymise_jobs(tx, [r for r in jobs if int(r["id"]) not in flying], now)
            ended = [r for r in stories if int(r["id"]) not in open_stories]
            erasure.add(await self._anonymise_stories(tx, ended, now))
            await self._mark(tx, "jobs", sorted(flying))
            await self._mark(tx, "stories", sorted(open_stories))
            erasure.pending = len(flying) + len(open_stories)
            await tx.execute("UPDATE content_rules SET added_by = ? WHERE added_by = ?", (ANONYMOUS_USER, user_id))
            # Who deleted a result (issue 19's Delete) may be someone else than who asked for it.
            await tx.execute("UPDATE jobs SET deleted_by = ? WHERE deleted_by = ?", (ANONYMOUS_USER, user_id))
            await tx.execute("UPDATE stories SET deleted_by = ? WHERE deleted_by = ?", (ANONYMOUS_USER, user_id))
            return erasure

        return await self._db.run_in_transaction(work)

    async def erase_finished(self, now: datetime) -> Erasure:
        """Anonymise the marked jobs and stories that have finished since they were marked."""

        async def work(tx: Transaction) -> Erasure:
            finals = _marks(_FINAL_JOBS)
            jobs = await tx.fetch_all(
                f"""SELECT {_JOB_COLUMNS} FROM jobs WHERE erase_requested = 1 AND state IN ({finals})
                    AND (story_id IS NULL OR story_id IN (SELECT id FROM stories WHERE state IN ({_marks(_FINAL_STORIES)})))""",  # noqa: S608, E501
                (*_FINAL_JOBS, *_FINAL_STORIES),
            )
            stories = await tx.fetch_all(
                f"SELECT {_STORY_COLUMNS} FROM stories WHERE erase_requested = 1 AND state IN ({_marks(_FINAL_STORIES)})",  # noqa: S608, E501
                _FINAL_STORIES,
            )
            erasure = await self._anonymise_jobs(tx, jobs, now)
            erasure.add(await self._anonymise_stories(tx, stories, now))
            left = await tx.fetch_one(
                "SELECT (SELECT COUNT(*) FROM jobs WHERE erase_requested = 1)"
                " + (SELECT COUNT(*) FROM stories WHERE erase_requested = 1)"
            )
            erasure.pending = int(left[0]) if left else 0
            return erasure

        return await self._db.run_in_transaction(work)

    async def anonymise_finished_before(self, cutoff: datetime, now: datetime, *, limit: int = 1000) -> Erasure:
        """Anonymise up to `limit` finished jobs and stories that finished before `cutoff` (the retention sweep;
        call again while it returns `limit` jobs)."""

        async def work(tx: Transaction) -> Erasure:
            jobs = await tx.fetch_all(
                f"""SELECT {_JOB_COLUMNS} FROM jobs
                    WHERE anonymised_at IS NULL AND finished_at < ? AND state IN ({_marks(_FINAL_JOBS)})
                    AND (story_id IS NULL OR story_id IN (SELECT id FROM stories WHERE state IN ({_marks(_FINAL_STORIES)})))
                    ORDER BY finished_at LIMIT ?""",  # noqa: S608, E501
                (_iso(cutoff), *_FINAL_JOBS, *_FINAL_STORIES, limit),
            )
            stories = await tx.fetch_all(
                f"""SELECT {_STORY_COLUMNS} FROM stories
                    WHERE anonymised_at IS NULL AND finished_at < ? AND state IN ({_marks(_FINAL_STORIES)})
                    ORDER BY finished_at LIMIT ?""",  # noqa: S608
                (_iso(cutoff), *_FINAL_STORIES, limit),
            )
            erasure = await self._anonymise_jobs(tx, jobs, now)
            erasure.add(await self._anonymise_stories(tx, stories, now))
            return erasure

        return await self._db.run_in_transaction(work)

    async def media_in_flight(self) -> set[str]:
        """Media references of every job not yet finished (whoever's: a shared frame they need stays)."""
        rows = await self._db.fetch_all(
            f"SELECT first_frame, last_frame, audio, first_clip FROM jobs WHERE state NOT IN ({_marks(_FINAL_JOBS)})",  # noqa: S608
            _FINAL_JOBS,
        )
        return {str(ref) for row in rows for ref in tuple(row) if ref}

    async def forget_uploads(self, digests: Iterable[str]) -> int:
        """Drop the provider-upload cache rows of these content digests (their oss:// URLs expire on their own)."""
        wanted = sorted(set(digests))
        removed = 0
        async with self._db.transaction() as tx:
            for start in range(0, len(wanted), _CHUNK):
                part = wanted[start : start + _CHUNK]
                removed += await tx.execute(f"DELETE FROM uploads WHERE sha256 IN ({_marks(part)})", part)  # noqa: S608
        return removed

    async def scrub(self) -> bool:
        """After an erasure: SQLite's WAL still holds the rows as they were until a checkpoint truncates it (freed
        pages are zeroed by secure_delete). PostgreSQL keeps dead row versions until (auto)vacuum: PRIVACY.md."""
        if isinstance(self._db, SqliteDatabase):
            return await self._db.truncate_wal()
        return True

    # --- internals -----------------------------------------------------------------------------------
    @staticmethod
    async def _open_stories(tx: Transaction, story_ids: set[int]) -> set[int]:
        if not story_ids:
            return set()
        ids = sorted(story_ids)
        rows = await tx.fetch_all(
            f"SELECT id FROM stories WHERE id IN ({_marks(ids)}) AND state NOT IN ({_marks(_FINAL_STORIES)})",  # noqa: S608
            (*ids, *_FINAL_STORIES),
        )
        return {int(r["id"]) for r in rows}

    @staticmethod
    async def _mark(tx: Transaction, table: str, ids: Sequence[int]) -> None:
        for part in _chunks(ids):
            await tx.execute(f"UPDATE {table} SET erase_requested = 1 WHERE id IN ({_marks(part)})", part)  # noqa: S608

    @staticmethod
    async def _anonymise_jobs(tx: Transaction, rows: Sequence[Row], now: datetime) -> Erasure:
        ids = [int(r["id"]) for r in rows]
        for part in _chunks(ids):
            await tx.execute(
                f"""UPDATE jobs SET user_id = ?, prompt = '', negative_prompt = NULL, actual_prompt = NULL,
                        error_detail = NULL, first_frame = '', last_frame = NULL, audio = NULL, first_clip = NULL,
                        video_path = NULL, erase_requested = 0, anonymised_at = ?,
                        deleted_by = CASE WHEN deleted_by IS NULL THEN NULL ELSE {int(ANONYMOUS_USER)} END
                    WHERE id IN ({_marks(part)})""",  # noqa: S608
                (ANONYMOUS_USER, _iso(now), *part),
            )
            # An event's detail is a code or a provider message; the latter may quote the prompt.
            await tx.execute(f"UPDATE job_events SET detail = NULL WHERE job_id IN ({_marks(part)})", part)  # noqa: S608
        return Erasure(jobs=len(ids), job_ids=ids, media={ref for r in rows for ref in _job_media(r)})

    @staticmethod
    async def _anonymise_stories(tx: Transaction, rows: Sequence[Row], now: datetime) -> Erasure:
        ids = [int(r["id"]) for r in rows]
        for part in _chunks(ids):
            await tx.execute(
                f"""UPDATE stories SET user_id = ?, prompts = '[]', frames = '[]', joined_path = NULL,
                        erase_requested = 0, anonymised_at = ?,
                        deleted_by = CASE WHEN deleted_by IS NULL THEN NULL ELSE {int(ANONYMOUS_USER)} END
                    WHERE id IN ({_marks(part)})""",  # noqa: S608
                (ANONYMOUS_USER, _iso(now), *part),
            )
        return Erasure(stories=len(ids), story_ids=ids, media={ref for r in rows for ref in _story_media(r)})


__all__ = ["ANONYMOUS_USER", "Erasure", "PrivacyStore"]
