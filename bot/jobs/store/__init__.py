"""The job repository: every SQL statement of the application lives here.

The database is the source of truth. Each state change is one transaction that also writes the job's
event row and, where money moves, its ledger row, so a process killed at any line finds a consistent
picture. The same code runs on SQLite (the default: one file in KF2V_DATA_DIR) and PostgreSQL
(KF2V_DATABASE_URL) through bot.jobs.db's `Database` interface; on PostgreSQL several processes share the
store, so every read-check-write takes a lock first (a guild's advisory lock for admissions and policy
changes, the job's row lock for transitions).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from bot.jobs.db import (
    Database,
    DatabaseError,
    DatabaseSettings,
    Dialect,
    LeaseLost,
    PostgresDatabase,
    Row,
    SqliteDatabase,
    Transaction,
    latest_version,
    migrate,
    open_database,
    redact_url,
)
from bot.jobs.db import schema_version as read_schema_version
from bot.jobs.models import (
    ChargeState,
    GuildPolicy,
    GuildUsage,
    Job,
    JobRequest,
    JobState,
    NewJob,
    check_transition,
)
from bot.jobs.store.common import StoreBase, StoreError, utcnow
from bot.jobs.store.common import db_value as _db_value
from bot.jobs.store.common import dt as _dt
from bot.jobs.store.common import guild_lock as _guild_lock
from bot.jobs.store.common import iso as _iso
from bot.jobs.store.common import required_dt as _required_dt
from bot.jobs.store.identity import IdentityStore
from bot.jobs.store.meta import PAUSE_CHANNEL, MetaStore
from bot.jobs.store.money import MoneyStore
from bot.jobs.store.rules import ChannelEdit, RulesStore

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

_STATE_TIMESTAMPS = {
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
    "video_url_expires_at": _dt,
    "submitted_at": _dt,
    "started_at": _dt,
    "finished_at": _dt,
    "delivered_at": _dt,
    "anonymised_at": _dt,
    "deleted_at": _dt,
    "created_at": _required_dt,
    "updated_at": _required_dt,
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
    return {name: _db_value(value) for name, value in given.items()}


def _same(value: Any) -> Any:
    return value


# What opening or reading the store can raise when the database is missing, damaged or unreachable.
STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    sqlite3.Error,
    OSError,
    TimeoutError,
    ValueError,
    DatabaseError,
    StoreError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


@dataclass(frozen=True, slots=True)
class SqliteFileCheck:
    """What `JobStore.seal_sqlite_copy` found in a copied database file."""

    integrity: list[str]  # ["ok"] when sound
    schema_version: int
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows, of the tables a backup reports


_COUNTED_TABLES = ("jobs", "job_events", "ledger", "guild_policies")


class JobStore(RulesStore, MoneyStore, IdentityStore, MetaStore, StoreBase):
    """The store over a `Database`: SQLite (one connection, writers serialised) or PostgreSQL (a pool)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        # Set by the dispatcher lease when several processes share the database: account -> (lease name,
        # epoch) this process submits under. None (SQLite, one process): no fencing, as always.
        self.fence_for: Callable[[str], tuple[str, int] | None] | None = None

    # --- lifecycle -----------------------------------------------------------------------------------
    @classmethod
    async def open(cls, path: Path) -> JobStore:
        """The SQLite store in the file `path` (created 0600 in a 0700 folder), migrated."""
        return await cls._migrated(await SqliteDatabase.open(path))

    @classmethod
    async def open_url(cls, url: str) -> JobStore:
        """The PostgreSQL store at `url` (postgresql://...), migrated."""
        return await cls._migrated(await PostgresDatabase.open(url))

    @classmethod
    async def from_settings(cls, settings: DatabaseSettings) -> JobStore:
        """PostgreSQL when KF2V_DATABASE_URL is set, else the SQLite file in KF2V_DATA_DIR; migrated."""
        return cls(await open_database(settings))

    @classmethod
    async def _migrated(cls, db: Database) -> JobStore:
        try:
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    @property
    def database(self) -> Database:
        """The `Database` underneath (for the copy and check commands)."""
        return self._db

    @property
    def dialect(self) -> Dialect:
        """Which engine: "sqlite" or "postgresql"."""
        return self._db.dialect

    def describe(self) -> str:
        """Which engine and where, for operators (a URL's password is redacted)."""
        if isinstance(self._db, SqliteDatabase):
            return f"SQLite {self._db.path}"
        return f"PostgreSQL {redact_url(getattr(self._db, '_url', ''))}"

    async def close(self) -> None:
        """Close the database; the store is unusable afterwards."""
        await self._db.close()

    async def schema_version(self) -> int:
        """The last migration applied to the database."""
        return await read_schema_version(self._db)

    def latest_schema_version(self) -> int:
        """The newest migration this code ships for the store's engine."""
        return latest_version(self._db.dialect)

    async def backup_to(self, target: Path) -> None:
        """Online, consistent copy through SQLite's backup API (SQLite only: PostgreSQL has pg_dump)."""
        if not isinstance(self._db, SqliteDatabase):
            raise StoreError(BACKUP_ON_POSTGRESQL)
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        # A second connection: its one-step backup reads one snapshot of the WAL file while the store's own
        # connection goes on writing.
        source = await aiosqlite.connect(self._db.path)
        try:
            dest = await aiosqlite.connect(target)
            try:
                await source.backup(dest)
            finally:
                await dest.close()
        finally:
            await source.close()
        await asyncio.to_thread(os.chmod, target, 0o600)

    # --- SQLite files, without a running store (backup's helpers; blocking: run them in a thread) -------
    @staticmethod
    def sqlite_file_version(path: Path) -> int:
        """The schema version of a SQLite database file, opened read-only (never migrated)."""
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = con.execute("PRAGMA user_version").fetchone()
            return int(row[0]) if row else 0
        finally:
            con.close()

    @staticmethod
    def copy_sqlite_file(source: Path, target: Path) -> None:
        """A consistent copy of `source` as it is (an older schema stays older: nothing is migrated)."""
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        try:
            dest = sqlite3.connect(target)
            try:
                src.backup(dest)
            finally:
                dest.close()
        finally:
            src.close()

    @staticmethod
    def seal_sqlite_copy(path: Path) -> SqliteFileCheck:
        """Make a copied file self-contained (no -wal) and check it: integrity, version, row counts."""
        con = sqlite3.connect(path)
        try:
            con.execute("PRAGMA journal_mode=DELETE")
            integrity = [str(r[0]) for r in con.execute("PRAGMA integrity_check").fetchall()]
            row = con.execute("PRAGMA user_version").fetchone()
            present = {str(r[0]) for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            rows: dict[str, int] = {}
            for table in _COUNTED_TABLES:
                if table in present:
                    counted = con.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()  # noqa: S608 - fixed names
                    rows[table] = int(counted[0]) if counted else 0
        finally:
            con.close()
        return SqliteFileCheck(integrity, int(row[0]) if row else 0, rows)

    # --- jobs ----------------------------------------------------------------------------------------
    async def create_job(
        self,
        new_job: NewJob,
        *,
        cost: int,
        period_day: str,
        period_month: str,
        admit: Callable[[GuildUsage, GuildPolicy], None],
        now: datetime | None = None,
    ) -> Job:
        """Reserve the cost and insert the job in one transaction.

        `admit` sees the guild's usage as of inside the transaction and raises to refuse; because the
        transaction holds the guild's lock (on SQLite: the file's write lock), concurrent requests, from
        this process or another, are admitted one after the other and a budget can never be over-committed.
        """
        now = now or utcnow()
        return await self._db.run_in_transaction(lambda tx: self._admit(tx, new_job, cost, period_day,
                                                                         period_month, admit, now))  # fmt: skip

    async def create_jobs(
        self,
        guild_id: int,
        user_id: int,
        *,
        cost: int,
        period_day: str,
        period_month: str,
        admit: Callable[[GuildUsage, GuildPolicy], None],
        prepare: Callable[[Transaction], Awaitable[Sequence[NewJob]]],
        now: datetime | None = None,
    ) -> list[Job]:
        """Several jobs of one guild and member admitted together, all or none, in one transaction (a story's
        segments; a segment's retry).

        `admit` decides once for the whole batch (it knows what the batch costs in all; `cost` is each job's
        reservation). `prepare` runs inside the transaction after the decision and returns the jobs to insert
        (a story writes its row first and puts its id on them; a retry may find it is no longer needed: []).
        """
        now = now or utcnow()

        async def work(tx: Transaction) -> list[Job]:
            await self._lock_and_decide(tx, guild_id, user_id, period_day, period_month, admit)
            batch = await prepare(tx)
            return [await self._insert_job(tx, job, cost, period_day, period_month, now) for job in batch]

        return await self._db.run_in_transaction(work)

    async def _admit(
        self,
        db: Transaction,
        new_job: NewJob,
        cost: int,
        period_day: str,
        period_month: str,
        admit: Callable[[GuildUsage, GuildPolicy], None],
        now: datetime,
    ) -> Job:
        await self._lock_and_decide(db, new_job.guild_id, new_job.user_id, period_day, period_month, admit)
        return await self._insert_job(db, new_job, cost, period_day, period_month, now)

    async def _lock_and_decide(
        self,
        db: Transaction,
        guild_id: int,
        user_id: int,
        period_day: str,
        period_month: str,
        admit: Callable[[GuildUsage, GuildPolicy], None],
    ) -> None:
        # First thing: READ COMMITTED reads after the lock see every admission committed before it.
        await db.lock(_guild_lock(guild_id))
        policy, usage = await self._policy_and_usage(db, guild_id, user_id, period_day, period_month)
        admit(usage, policy)

    async def _insert_job(
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
                _iso(now),
                _iso(now),
            ),
        )
        rows = list(inserted)
        if not rows:
            raise StoreError("insert returned no row")
        job = _job(rows[0])  # the row as inserted: the event and ledger rows below do not change it
        await self._event(db, job.id, JobState.QUEUED, now)
        await self._ledger(db, job.id, new_job.guild_id, "reserve", cost, now)
        return job

    async def get(self, job_id: int) -> Job | None:
        """None when the job is unknown."""
        return await self._get(self._db, job_id)

    async def transition(
        self,
        job_id: int,
        new_state: JobState,
        *,
        expect: JobState | Iterable[JobState] | None = None,
        settle: int | None = None,
        release: bool = False,
        refund: bool = False,
        now: datetime | None = None,
        detail: str | None = None,
        **fields: Any,
    ) -> Job:
        """Move a job to `new_state` (and set `fields`) atomically.

        `expect` guards against races (raises `StaleState` when the job moved meanwhile); `settle`
        charges the actual cost and `release` frees the reservation, both written to the ledger in the
        same transaction. `refund` gives a settled job's cost back (its video could never be shown): a
        'release' entry of the settled amount follows its 'settle', and the job counts as RELEASED.
        """
        now = now or utcnow()
        bad = set(fields) - UPDATABLE_FIELDS
        if bad:
            raise StoreError(f"not updatable: {sorted(bad)}")
        async with self._db.transaction() as db:
            # The row stays locked until commit: another process's transition of this job waits, then
            # sees this one's outcome (and its `expect` fails as it should).
            locked = await db.lock_rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
            if not locked:
                raise StoreError(f"job {job_id} does not exist")
            job = _job(locked[0])
            if expect is not None:
                allowed = {expect} if isinstance(expect, JobState) else set(expect)
                if job.state not in allowed:
                    raise StaleState(job)
            check_transition(job_id, job.state, new_state)
            await self._check_fence(db, job, new_state, fields, money=settle is not None)
            values: dict[str, Any] = {k: _db_value(v) for k, v in fields.items()}
            stamp = _STATE_TIMESTAMPS.get(new_state)
            if stamp and stamp not in values:
                values[stamp] = _iso(now)
            if refund and job.charge_state is ChargeState.SETTLED:
                values["charge_state"] = ChargeState.RELEASED.value
                values["cost_settled"] = 0
                await self._ledger(db, job_id, job.guild_id, "release", job.cost_settled, now)
            elif refund and job.charge_state is ChargeState.RESERVED:
                release = True
            if settle is not None or release:
                if job.charge_state is not ChargeState.RESERVED:
                    raise StoreError(f"job {job_id} was already {job.charge_state}; money moves once")
                if settle is not None:
                    values["charge_state"] = ChargeState.SETTLED.value
                    values["cost_settled"] = settle
                    await self._ledger(db, job_id, job.guild_id, "settle", settle, now)
                else:
                    values["charge_state"] = ChargeState.RELEASED.value
                    await self._ledger(db, job_id, job.guild_id, "release", job.cost_reserved, now)
            values["state"] = new_state.value
            values["updated_at"] = _iso(now)
            await self._update(db, job_id, values)
            await self._event(db, job_id, new_state, now, detail)
            updated = await self._get(db, job_id)
        assert updated is not None
        return updated

    async def _check_fence(
        self, db: Transaction, job: Job, new_state: JobState, fields: dict[str, Any], *, money: bool = False
    ) -> None:
        """A submission write (SUBMITTING, or a task id recorded), a settlement and a delivery (DELIVERED) commit
        only under the live dispatcher lease of the job's account: a process that lost the lease (frozen, then
        woken) gets `LeaseLost` and writes nothing (issues 14 and 17)."""
        if self.fence_for is None:
            return
        fenced = new_state in (JobState.SUBMITTING, JobState.SUCCEEDED, JobState.DELIVERED) or money
        if not fenced and fields.get("task_id") is None:
            return
        if new_state is not JobState.SUBMITTING and job.account is None:
            return  # never submitted (a queued job cancelled or failed): no provider work to fence
        account = fields.get("account") or job.account
        fence = self.fence_for(account) if account else None
        if fence is None:
            raise LeaseLost(f"job {job.id}: this process holds no dispatcher lease for account {account!r}")
        await db.check_epoch(*fence)

    async def check_lease(self, job: Job) -> None:
        """Raise `LeaseLost` unless this process may act for `job`'s account (before posting its video)."""
        if self.fence_for is None:
            return  # one process (SQLite): nothing to fence
        async with self._db.transaction() as db:
            await self._check_fence(db, job, JobState.DELIVERED, {})

    async def update(self, job_id: int, **fields: Any) -> Job:
        """Set non-state fields (status message, thread, delivery attempts, ...)."""
        bad = set(fields) - UPDATABLE_FIELDS
        if bad:
            raise StoreError(f"not updatable: {sorted(bad)}")
        async with self._db.transaction() as db:
            values = {k: _db_value(v) for k, v in fields.items()}
            values["updated_at"] = _iso(utcnow())
            await self._update(db, job_id, values)
            job = await self._get(db, job_id)
        if job is None:
            raise StoreError(f"job {job_id} does not exist")
        return job

    async def requeue_front(self, job_id: int, *, expect: JobState, detail: str, **fields: Any) -> Job:
        """SUBMITTING -> QUEUED keeping the job's original place (its queue_seq is unchanged)."""
        return await self.transition(job_id, JobState.QUEUED, expect=expect, detail=detail, **fields)

    async def mark_result_deleted(self, job_id: int, user_id: int, now: datetime | None = None) -> Job | None:
        """Record that `user_id` took the job's delivered video down; None when it was already taken down (the
        first press wins). The row, its cost and its ledger entries stay as they are."""
        async with self._db.transaction() as db:
            changed = await db.execute(
                "UPDATE jobs SET deleted_by = ?, deleted_at = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
                (user_id, _iso(now or utcnow()), _iso(utcnow()), job_id),
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
                (*tier, float(queued_s), float(running_s), _iso(utcnow())),
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
            submitted, started, finished = (_required_dt(v) for v in row)
            out.append(((started - submitted).total_seconds(), (finished - started).total_seconds()))
        return out

    async def recent_submissions(self, since: datetime) -> list[tuple[str, str, datetime]]:
        """(account, model, submitted_at) of submissions since `since`: the rate limiter's memory."""
        rows = await self._db.fetch_all(
            """SELECT account, model, submitted_at FROM jobs
               WHERE submitted_at IS NOT NULL AND submitted_at >= ? AND account IS NOT NULL""",
            (_iso(since),),
        )
        return [(r[0], r[1], _required_dt(r[2])) for r in rows]

    async def jobs_with_media_before(self, before: datetime) -> list[Job]:
        """Final jobs finished before `before` that still reference a stored video."""
        rows = await self._db.fetch_all(
            """SELECT * FROM jobs WHERE state IN ('delivered', 'failed', 'canceled')
               AND finished_at IS NOT NULL AND finished_at < ? AND video_path IS NOT NULL""",
            (_iso(before),),
        )
        return [_job(r) for r in rows]

    async def frames_in_use(self, finished_after: datetime) -> set[str]:
        """Media (frames, driving audio, continued clips) referenced by unfinished jobs or by jobs finished after
        the cut-off (regenerate needs them)."""
        rows = await self._db.fetch_all(
            """SELECT first_frame, last_frame, audio, first_clip FROM jobs
               WHERE state NOT IN ('delivered', 'failed', 'canceled') OR finished_at IS NULL OR finished_at >= ?""",
            (_iso(finished_after),),
        )
        return {ref for row in rows for ref in tuple(row) if ref}

    async def ping(self) -> bool:
        """True when the database answers and takes writes (health checks); the engine's error when not."""
        return await self._db.ping()

    # --- internals -----------------------------------------------------------------------------------
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
                (task_id, job_id, values.get("updated_at") or _iso(utcnow())),
            )

    async def _event(
        self, db: Transaction, job_id: int, state: JobState, now: datetime, detail: str | None = None
    ) -> None:
        await db.execute(
            "INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)",
            (job_id, state.value, _iso(now), detail),
        )
        # Every admission and state change has its event row: other processes hear of it on commit (issue 14).
        db.notify(JOB_CHANNEL, job_notice(job_id, state, self.origin))


_QUEUE_SEQ_LOCK = "queue_seq"
JOB_CHANNEL = "kf2v_jobs"  # LISTEN/NOTIFY channel of job admissions and state changes
BACKUP_ON_POSTGRESQL = (
    "kf2v-bot backup copies the SQLite file only; with KF2V_DATABASE_URL set, back PostgreSQL up with "
    "pg_dump (e.g. pg_dump -Fc -f kf2v.dump <database>) and keep the media volume alongside"
)


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


__all__ = [
    "BACKUP_ON_POSTGRESQL",
    "JOB_CHANNEL",
    "PAUSE_CHANNEL",
    "STORE_UNAVAILABLE",
    "ChannelEdit",
    "JobStore",
    "SqliteFileCheck",
    "StaleState",
    "StoreError",
    "utcnow",
]
