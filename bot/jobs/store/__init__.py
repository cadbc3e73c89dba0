"""The job store: every SQL statement of the application, one module per aggregate, composed here as `JobStore`.

    jobs.py      jobs and their states: job rows, events, provider tasks, run times
    money.py     the ledger and the guilds' usage and spend against their budgets
    rules.py     content rules and guild policies (what a guild allows)
    identity.py  leases and provider identity: the dispatcher lease's fence, the accounts' keys, api_key_ids
    meta.py      operator state: the meta table and the owners' pauses
    common.py    what they share: the clock, value conversions, StoreError, StoreBase, the guild lock's key
Stories (bot/jobs/story/store.py), the privacy erasure (bot/jobs/privacy/store.py), the reports' sums
(bot/jobs/reports/store.py) and the upload cache (bot/jobs/uploads.py) keep their SQL in their own packages.
Each module declares the tables it owns (`TABLES`) and the others' it names (`USES`); none imports another
(import-linter, tests/unit/jobs/test_store_layout.py). This module holds what spans aggregates, each a single
transaction handed to every aggregate's part: an admission (the job row, its event, its ledger reservation) and
a transition (the row lock, the lease fence, the event and any settlement or release), plus opening, closing
and copying the database.

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
from dataclasses import dataclass, field
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
    PostgresDatabase,
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
    JobState,
    NewJob,
    check_transition,
)
from bot.jobs.store.common import StoreBase, StoreError, db_value, guild_lock, iso, utcnow
from bot.jobs.store.identity import IdentityStore
from bot.jobs.store.jobs import (
    JOB_CHANNEL,
    STATE_TIMESTAMPS,
    UPDATABLE_FIELDS,
    JobStateStore,
    StaleState,
    job_notice,
    read_job_notice,
)
from bot.jobs.store.meta import PAUSE_CHANNEL, MetaStore
from bot.jobs.store.money import MoneyStore
from bot.jobs.store.rules import ChannelEdit, RulesStore

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


class JobStore(JobStateStore, MoneyStore, RulesStore, IdentityStore, MetaStore, StoreBase):
    """The store over a `Database`: SQLite (one connection, writers serialised) or PostgreSQL (a pool).

    Every aggregate's methods over one `Database`; the ones spanning aggregates are defined here."""

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

    # --- across aggregates: admission and transitions, one transaction each ------------------------
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
        await db.lock(guild_lock(guild_id))
        policy, usage = await self._policy_and_usage(db, guild_id, user_id, period_day, period_month)
        admit(usage, policy)

    async def _insert_job(
        self, db: Transaction, new_job: NewJob, cost: int, period_day: str, period_month: str, now: datetime
    ) -> Job:
        job = await self._insert(db, new_job, cost, period_day, period_month, now)
        await self._ledger(db, job.id, new_job.guild_id, "reserve", cost, now)
        return job

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
            job = await self._lock(db, job_id)
            if job is None:
                raise StoreError(f"job {job_id} does not exist")
            if expect is not None:
                allowed = {expect} if isinstance(expect, JobState) else set(expect)
                if job.state not in allowed:
                    raise StaleState(job)
            check_transition(job_id, job.state, new_state)
            await self._check_fence(db, job, new_state, fields, money=settle is not None)
            values: dict[str, Any] = {k: db_value(v) for k, v in fields.items()}
            stamp = STATE_TIMESTAMPS.get(new_state)
            if stamp and stamp not in values:
                values[stamp] = iso(now)
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
            values["updated_at"] = iso(now)
            await self._update(db, job_id, values)
            await self._event(db, job_id, new_state, now, detail)
            updated = await self._get(db, job_id)
        assert updated is not None
        return updated

    async def requeue_front(self, job_id: int, *, expect: JobState, detail: str, **fields: Any) -> Job:
        """SUBMITTING -> QUEUED keeping the job's original place (its queue_seq is unchanged)."""
        return await self.transition(job_id, JobState.QUEUED, expect=expect, detail=detail, **fields)

    async def ping(self) -> bool:
        """True when the database answers and takes writes (health checks); the engine's error when not."""
        return await self._db.ping()


BACKUP_ON_POSTGRESQL = (
    "kf2v-bot backup copies the SQLite file only; with KF2V_DATABASE_URL set, back PostgreSQL up with "
    "pg_dump (e.g. pg_dump -Fc -f kf2v.dump <database>) and keep the media volume alongside"
)


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
    "job_notice",
    "read_job_notice",
    "utcnow",
]
