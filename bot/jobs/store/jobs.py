"""Jobs and their states: the job rows, each state change's event row, the provider tasks a job has had and
the run times learnt from finished jobs.

Owns the tables jobs, job_events, job_tasks and run_times. Other aggregates read the jobs' rows (money sums
their money columns, stories their segments, reports their days) and the JobStore writes a job's ledger rows in
the same transaction as its row (bot/jobs/store/__init__.py: admission, transition). Each admission and state
change is announced on JOB_CHANNEL when it commits, so other processes hear of it (issue 14).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from datetime import datetime
from typing import Any

from bot.jobs.db import Database, Row, Transaction
from bot.jobs.models import ChargeState, Job, JobRequest, JobState, NewJob
from bot.jobs.store.common import StoreBase, StoreError, db_value, dt, iso, required_dt, utcnow

TABLES = frozenset({"jobs", "job_events", "job_tasks", "run_times"})
USES: frozenset[str] = frozenset()

# Columns callers may set alongside a transition or on their own; anything else is a bug.
UPDATABLE_FIELDS = frozenset(
    {
        "account",
        "task_id",
        "request_id",
        "attempts",
        "delivery_attempts",
        "error_code",
        "error_key",
        "error_detail",
        "actual_prompt",
        "video_path",
        "video_url_expires_at",
        "status_message_id",
        "thread_id",
        "cancel_requested",
        "submitted_at",
        "started_at",
        "finished_at",
        "delivered_at",
    }
)

# The column each state stamps with the time it was entered (unless the caller gives it).
STATE_TIMESTAMPS = {
    JobState.SUBMITTING: "submitted_at",
    JobState.RUNNING: "started_at",
    JobState.SUCCEEDED: "finished_at",
    JobState.FAILED: "finished_at",
    JobState.CANCELED: "finished_at",
    JobState.DELIVERED: "delivered_at",
}


# Columns are named as Job's fields; these need converting from SQLite's types.
_JOB_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "prompt_extend": bool,
    "sound": lambda value: None if value is None else bool(value),
    "cancel_requested": bool,
    "state": JobState,
    "charge_state": ChargeState,
    "video_url_expires_at": dt,
    "submitted_at": dt,
    "started_at": dt,
    "finished_at": dt,
    "delivered_at": dt,
    "anonymised_at": dt,
    "deleted_at": dt,
    "created_at": required_dt,
    "updated_at": required_dt,
}
_REQUEST_FIELDS = tuple(f.name for f in fields(JobRequest))  # the job's options: columns of the same names
_JOB_FIELDS = tuple(f.name for f in fields(Job) if f.name != "request")
_NEW_JOB_FIELDS = tuple(f.name for f in fields(NewJob) if f.name != "request")


def _job(row: Row) -> Job:
    request = JobRequest(**{name: _JOB_CONVERTERS.get(name, _same)(row[name]) for name in _REQUEST_FIELDS})
    return Job(request=request, **{name: _JOB_CONVERTERS.get(name, _same)(row[name]) for name in _JOB_FIELDS})


def _new_job_columns(new_job: NewJob) -> dict[str, Any]:
    """A new job's column values, by field name: a request option added to JobRequest needs only its column."""
    given = {name: getattr(new_job, name) for name in _NEW_JOB_FIELDS}
    given.update((name, getattr(new_job.request, name)) for name in _REQUEST_FIELDS)
    return {name: db_value(value) for name, value in given.items()}


def _same(value: Any) -> Any:
    return value


_QUEUE_SEQ_LOCK = "queue_seq"
JOB_CHANNEL = "kf2v_jobs"  # LISTEN/NOTIFY channel of job admissions and state changes


def job_notice(job_id: int, state: JobState, origin: str) -> str:
    """The payload of a job notification: `<job id> <state> <origin store>`."""
    return f"{job_id} {state.value} {origin}"


def read_job_notice(payload: str) -> tuple[int, JobState, str] | None:
    """(job id, state, origin) of a job notification; None for anything else on the channel."""
    parts = payload.split(" ")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    try:
        return int(parts[0]), JobState(parts[1]), parts[2]
    except ValueError:
        return None


class StaleState(Exception):
    """The job is no longer in the state the caller expected (someone else moved it)."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} is {job.state}")
        self.job = job


class JobStateStore(StoreBase):
    """The jobs, their events and provider tasks, and the run times."""

    async def get(self, job_id: int) -> Job | None:
        """None when the job is unknown."""
        return await self._get(self._db, job_id)

    async def update(self, job_id: int, **fields: Any) -> Job:
        """Set non-state fields (status message, thread, delivery attempts, ...)."""
        bad = set(fields) - UPDATABLE_FIELDS
        if bad:
            raise StoreError(f"not updatable: {sorted(bad)}")
        async with self._db.transaction() as db:
            values = {k: db_value(v) for k, v in fields.items()}
            values["updated_at"] = iso(utcnow())
            await self._update(db, job_id, values)
            job = await self._get(db, job_id)
        if job is None:
            raise StoreError(f"job {job_id} does not exist")
        return job

    async def mark_result_deleted(self, job_id: int, user_id: int, now: datetime | None = None) -> Job | None:
        """Record that `user_id` took the job's delivered video down; None when it was already taken down (the
        first press wins). The row, its cost and its ledger entries stay as they are."""
        async with self._db.transaction() as db:
            changed = await db.execute(
                "UPDATE jobs SET deleted_by = ?, deleted_at = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
                (user_id, iso(now or utcnow()), iso(utcnow()), job_id),
            )
            job = await self._get(db, job_id) if changed else None
        return job

    async def jobs_in_states(self, states: Iterable[JobState]) -> list[Job]:
        """Every job in any of `states`, in queue order."""
        wanted = [s.value for s in states]
        marks = ",".join("?" * len(wanted))
        rows = await self._db.fetch_all(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY queue_seq",  # noqa: S608 - placeholders only
            wanted,
        )
        return [_job(r) for r in rows]

    async def jobs_for_user(self, guild_id: int, user_id: int, limit: int = 10) -> list[Job]:
        """The member's latest `limit` jobs in the guild, newest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM jobs WHERE guild_id = ? AND user_id = ? ORDER BY id DESC LIMIT ?",
            (guild_id, user_id, limit),
        )
        return [_job(r) for r in rows]

    async def all_jobs(self) -> list[Job]:
        """Every job, oldest first (checks and copies; unbounded)."""
        rows = await self._db.fetch_all("SELECT * FROM jobs ORDER BY id")
        return [_job(r) for r in rows]

    async def task_id_known(self, task_id: str) -> bool:
        """Whether any job has (or once had) this provider task."""
        return await self.task_owner(task_id) is not None

    async def task_owner(self, task_id: str) -> tuple[int, str | None] | None:
        """(job id, account) of the job that has or had this provider task, None if no job ever had it."""
        row = await self._db.fetch_one(
            """SELECT j.id, j.account FROM job_tasks AS t JOIN jobs AS j ON j.id = t.job_id WHERE t.task_id = ?
               UNION ALL SELECT id, account FROM jobs WHERE task_id = ? LIMIT 1""",
            (task_id, task_id),
        )
        return (int(row[0]), row[1]) if row else None

    async def provider_tasks_used(self, job_id: int) -> int:
        """How many provider tasks this job has had (a resubmission after a temporary failure adds one)."""
        row = await self._db.fetch_one("SELECT COUNT(*) FROM job_tasks WHERE job_id = ?", (job_id,))
        return int(row[0]) if row else 0

    async def count_by_state(self) -> dict[JobState, int]:
        """Jobs per state; states with no job are absent."""
        rows = await self._db.fetch_all("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {JobState(r[0]): int(r[1]) for r in rows}

    async def add_run_time(
        self, model: str, resolution: str, duration: int | None, queued_s: float, running_s: float, keep: int = 50
    ) -> None:
        """Keep a finished task's provider times for its tier (duration None: 0), the latest `keep` per tier."""
        tier = (model, resolution, duration or 0)
        async with self._db.transaction() as db:
            await db.execute(
                """INSERT INTO run_times (model, resolution, duration, queued_s, running_s, observed_at)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                (*tier, float(queued_s), float(running_s), iso(utcnow())),
            )
            await db.execute(
                """DELETE FROM run_times WHERE model = ? AND resolution = ? AND duration = ? AND id <= (
                       SELECT id FROM run_times WHERE model = ? AND resolution = ? AND duration = ?
                       ORDER BY id DESC LIMIT 1 OFFSET ?)""",
                (*tier, *tier, keep),
            )

    async def run_times(self) -> dict[tuple[str, str, int | None], list[tuple[float, float]]]:
        """Every tier's kept (queued, running) seconds, oldest first; a duration of 0 reads as None."""
        rows = await self._db.fetch_all(
            "SELECT model, resolution, duration, queued_s, running_s FROM run_times ORDER BY id"
        )
        found: dict[tuple[str, str, int | None], list[tuple[float, float]]] = {}
        for model, resolution, duration, queued_s, running_s in rows:
            tier = (str(model), str(resolution), int(duration) or None)
            found.setdefault(tier, []).append((float(queued_s), float(running_s)))
        return found

    async def recent_durations(self, model: str, resolution: str, limit: int = 50) -> list[tuple[float, float]]:
        """(queued-at-provider seconds, running seconds) of the latest finished jobs of this tier."""
        rows = await self._db.fetch_all(
            """SELECT submitted_at, started_at, finished_at FROM jobs
               WHERE model = ? AND resolution = ? AND state IN ('succeeded', 'delivered')
                 AND submitted_at IS NOT NULL AND started_at IS NOT NULL AND finished_at IS NOT NULL
               ORDER BY id DESC LIMIT ?""",
            (model, resolution, limit),
        )
        out = []
        for row in rows:
            submitted, started, finished = (required_dt(v) for v in row)
            out.append(((started - submitted).total_seconds(), (finished - started).total_seconds()))
        return out

    async def recent_submissions(self, since: datetime) -> list[tuple[str, str, datetime | None]]:
        """(account, model, latest moment the create may have reached the provider) of submissions marked since
        `since`: the rate limiter's memory after a restart. `submitted_at` is written before the create is built
        and sent, so it can be well before the provider counted the create; the moment its answer was recorded
        (its first later event: PENDING, back to the queue, failed) is after it. None: the job is still
        SUBMITTING, its create may have left at any moment up to the crash."""
        rows = await self._db.fetch_all(
            """SELECT j.account, j.model, j.state,
                      (SELECT MIN(e.at) FROM job_events e
                        WHERE e.job_id = j.id AND e.state <> 'submitting' AND e.at >= j.submitted_at),
                      j.updated_at
               FROM jobs j
               WHERE j.submitted_at IS NOT NULL AND j.submitted_at >= ? AND j.account IS NOT NULL""",
            (iso(since),),
        )
        return [(r[0], r[1], None if r[2] == JobState.SUBMITTING.value else required_dt(r[3] or r[4])) for r in rows]

    async def jobs_with_media_before(self, before: datetime) -> list[Job]:
        """Final jobs finished before `before` that still reference a stored video."""
        rows = await self._db.fetch_all(
            """SELECT * FROM jobs WHERE state IN ('delivered', 'failed', 'canceled')
               AND finished_at IS NOT NULL AND finished_at < ? AND video_path IS NOT NULL""",
            (iso(before),),
        )
        return [_job(r) for r in rows]

    async def frames_in_use(self, finished_after: datetime) -> set[str]:
        """Media (frames, driving audio, continued clips) referenced by unfinished jobs or by jobs finished after
        the cut-off (regenerate needs them)."""
        rows = await self._db.fetch_all(
            """SELECT first_frame, last_frame, audio, first_clip FROM jobs
               WHERE state NOT IN ('delivered', 'failed', 'canceled') OR finished_at IS NULL OR finished_at >= ?""",
            (iso(finished_after),),
        )
        return {ref for row in rows for ref in tuple(row) if ref}

    # --- in a caller's transaction (an admission, a transition) ---------------------------------------
    async def _insert(
        self, db: Transaction, new_job: NewJob, cost: int, period_day: str, period_month: str, now: datetime
    ) -> Job:
        # The next queue_seq is computed inside the INSERT (indexed since 0002): one trip, not two.
        # Admissions into other guilds hold other guild locks, so this second key (always taken after
        # the guild's: no deadlock) keeps MAX + 1 unique on PostgreSQL, and only for the insert's tail.
        await db.lock(_QUEUE_SEQ_LOCK)
        given = _new_job_columns(new_job)
        columns = ", ".join(given)  # field names, never user input
        inserted = await db.fetch_all(
            f"""INSERT INTO jobs ({columns}, state, queue_seq, cost_reserved, charge_state, period_day, period_month,
                   created_at, updated_at)
               VALUES ({", ".join("?" * len(given))}, ?, (SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM jobs),
                       ?, ?, ?, ?, ?, ?)
               RETURNING *""",  # noqa: S608
            (
                *given.values(),
                JobState.QUEUED.value,
                cost,
                ChargeState.RESERVED.value,
                period_day,
                period_month,
                iso(now),
                iso(now),
            ),
        )
        rows = list(inserted)
        if not rows:
            raise StoreError("insert returned no row")
        job = _job(rows[0])  # the row as inserted: its event row (and the caller's ledger row) do not change it
        await self._event(db, job.id, JobState.QUEUED, now)
        return job

    @staticmethod
    async def _lock(db: Transaction, job_id: int) -> Job | None:
        locked = await db.lock_rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(locked[0]) if locked else None

    @staticmethod
    async def _get(db: Transaction | Database, job_id: int) -> Job | None:
        row = await db.fetch_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(row) if row else None

    @staticmethod
    async def _update(db: Transaction, job_id: int, values: dict[str, Any]) -> None:
        # Column names come from UPDATABLE_FIELDS or this module, never from users.
        assignments = ", ".join(f"{name} = ?" for name in values)
        await db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values.values(), job_id))  # noqa: S608
        task_id = values.get("task_id")
        if task_id is not None:  # remembered for good, even after a resubmission clears jobs.task_id
            await db.execute(
                "INSERT INTO job_tasks (task_id, job_id, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (task_id, job_id, values.get("updated_at") or iso(utcnow())),
            )

    async def _event(
        self, db: Transaction, job_id: int, state: JobState, now: datetime, detail: str | None = None
    ) -> None:
        await db.execute(
            "INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)",
            (job_id, state.value, iso(now), detail),
        )
        # Every admission and state change has its event row: other processes hear of it on commit (issue 14).
        db.notify(JOB_CHANNEL, job_notice(job_id, state, self.origin))
