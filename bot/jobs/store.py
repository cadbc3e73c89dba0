"""The job repository: every SQL statement of the application lives here.

The database is the source of truth. Each state change is one transaction that also writes the job's
event row and, where money moves, its ledger row, so a process killed at any line finds a consistent
picture. The interface is deliberately narrow (jobs, money, policies, meta) so a PostgreSQL
implementation can follow with the same tests.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import fields
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from bot.jobs.models import (
    ChargeState,
    GuildPolicy,
    GuildUsage,
    Job,
    JobRequest,
    JobState,
    LedgerEntry,
    Pause,
    PauseScope,
    check_transition,
)

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


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="microseconds") if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _required_dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


# Columns are named as Job's fields; these need converting from SQLite's types.
_JOB_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "prompt_extend": bool,
    "cancel_requested": bool,
    "state": JobState,
    "charge_state": ChargeState,
    "video_url_expires_at": _dt,
    "submitted_at": _dt,
    "started_at": _dt,
    "finished_at": _dt,
    "delivered_at": _dt,
    "created_at": _required_dt,
    "updated_at": _required_dt,
}
_JOB_FIELDS = tuple(f.name for f in fields(Job))


def _job(row: aiosqlite.Row) -> Job:
    return Job(**{name: _JOB_CONVERTERS.get(name, _same)(row[name]) for name in _JOB_FIELDS})


def _same(value: Any) -> Any:
    return value


def _db_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, bool):
        return int(value)
    return value


class StoreError(RuntimeError):
    """The database is not in the shape this code expects (a bug or a damaged file)."""


class JobStore:
    """aiosqlite implementation. One connection; writes are serialised by a lock."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._write_lock = asyncio.Lock()

    # --- lifecycle -----------------------------------------------------------------------------------
    @classmethod
    async def open(cls, path: Path) -> JobStore:
        await asyncio.to_thread(_prepare_file, path)
        db = await aiosqlite.connect(path, isolation_level=None)  # autocommit; we BEGIN explicitly
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=5000")
        store = cls(db)
        await store._migrate()
        return store

    async def close(self) -> None:
        await self._db.close()

    async def _migrate(self) -> None:
        files = sorted(
            (f for f in resources.files("bot.jobs.migrations").iterdir() if f.name.endswith(".sql")),
            key=lambda f: f.name,
        )
        async with self._write_lock:
            row = await _one(self._db, "PRAGMA user_version")
            current = int(row[0]) if row else 0
            pending = [(int(f.name.split("_", 1)[0]), f.read_text(encoding="utf-8")) for f in files]
            pending = [(v, sql) for v, sql in pending if v > current]
            if not pending:
                return
            # One transaction for all pending migrations: a crash leaves the old schema intact.
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for version, sql in pending:
                    for statement in _split_sql(sql):
                        await self._db.execute(statement)
                    await self._db.execute(f"PRAGMA user_version = {version:d}")
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def schema_version(self) -> int:
        row = await _one(self._db, "PRAGMA user_version")
        return int(row[0]) if row else 0

    async def backup_to(self, target: Path) -> None:
        """Online, consistent copy through SQLite's backup API."""
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        dest = await aiosqlite.connect(target)
        try:
            async with self._write_lock:
                await self._db.backup(dest)
        finally:
            await dest.close()
        await asyncio.to_thread(os.chmod, target, 0o600)

    # --- jobs ----------------------------------------------------------------------------------------
    async def create_job(
        self,
        request: JobRequest,
        *,
        cost: int,
        period_day: str,
        period_month: str,
        admit: Callable[[GuildUsage, GuildPolicy], None],
        now: datetime | None = None,
    ) -> Job:
        """Reserve the cost and insert the job in one transaction.

        `admit` sees the guild's usage as of inside the transaction and raises to refuse; because the
        transaction holds the write lock, concurrent requests are admitted one after the other and a
        budget can never be over-committed.
        """
        now = now or utcnow()
        async with self._transaction() as db:
            policy, usage = await self._policy_and_usage(
                db, request.guild_id, request.user_id, period_day, period_month
            )
            admit(usage, policy)
            # The next queue_seq is computed inside the INSERT (indexed since 0002): one trip, not two.
            inserted = await db.execute_fetchall(
                """INSERT INTO jobs (guild_id, channel_id, user_id, locale, model, resolution, prompt,
                       negative_prompt, seed, prompt_extend, template, first_frame, last_frame, parent_job_id,
                       state, queue_seq, cost_reserved, charge_state, period_day, period_month,
                       created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                           (SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM jobs), ?, ?, ?, ?, ?, ?)
                   RETURNING *""",
                (
                    request.guild_id,
                    request.channel_id,
                    request.user_id,
                    request.locale,
                    request.model,
                    request.resolution,
                    request.prompt,
                    request.negative_prompt,
                    request.seed,
                    int(request.prompt_extend),
                    request.template,
                    request.first_frame,
                    request.last_frame,
                    request.parent_job_id,
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
            await self._ledger(db, job.id, request.guild_id, "reserve", cost, now)
        return job

    async def get(self, job_id: int) -> Job | None:
        return await self._get(self._db, job_id)

    async def transition(
        self,
        job_id: int,
        new_state: JobState,
        *,
        expect: JobState | Iterable[JobState] | None = None,
        settle: int | None = None,
        release: bool = False,
        now: datetime | None = None,
        detail: str | None = None,
        **fields: Any,
    ) -> Job:
        """Move a job to `new_state` (and set `fields`) atomically.

        `expect` guards against races (raises `StaleState` when the job moved meanwhile); `settle`
        charges the actual cost and `release` frees the reservation, both written to the ledger in the
        same transaction.
        """
        now = now or utcnow()
        bad = set(fields) - UPDATABLE_FIELDS
        if bad:
            raise StoreError(f"not updatable: {sorted(bad)}")
        async with self._transaction() as db:
            job = await self._get(db, job_id)
            if job is None:
                raise StoreError(f"job {job_id} does not exist")
            if expect is not None:
                allowed = {expect} if isinstance(expect, JobState) else set(expect)
                if job.state not in allowed:
                    raise StaleState(job)
            check_transition(job_id, job.state, new_state)
            values: dict[str, Any] = {k: _db_value(v) for k, v in fields.items()}
            stamp = _STATE_TIMESTAMPS.get(new_state)
            if stamp and stamp not in values:
                values[stamp] = _iso(now)
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

    async def update(self, job_id: int, **fields: Any) -> Job:
        """Set non-state fields (status message, thread, delivery attempts, ...)."""
        bad = set(fields) - UPDATABLE_FIELDS
        if bad:
            raise StoreError(f"not updatable: {sorted(bad)}")
        async with self._transaction() as db:
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

    async def jobs_in_states(self, states: Iterable[JobState]) -> list[Job]:
        wanted = [s.value for s in states]
        marks = ",".join("?" * len(wanted))
        rows = await self._db.execute_fetchall(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY queue_seq",  # noqa: S608 - placeholders only
            wanted,
        )
        return [_job(r) for r in rows]

    async def jobs_for_user(self, guild_id: int, user_id: int, limit: int = 10) -> list[Job]:
        rows = await self._db.execute_fetchall(
            "SELECT * FROM jobs WHERE guild_id = ? AND user_id = ? ORDER BY id DESC LIMIT ?",
            (guild_id, user_id, limit),
        )
        return [_job(r) for r in rows]

    async def all_jobs(self) -> list[Job]:
        rows = await self._db.execute_fetchall("SELECT * FROM jobs ORDER BY id")
        return [_job(r) for r in rows]

    async def task_id_known(self, task_id: str) -> bool:
        """Whether any job has (or once had) this provider task."""
        return await self.task_owner(task_id) is not None

    async def task_owner(self, task_id: str) -> tuple[int, str | None] | None:
        """(job id, account) of the job that has or had this provider task, None if no job ever had it."""
        row = await _one(
            self._db,
            """SELECT j.id, j.account FROM job_tasks AS t JOIN jobs AS j ON j.id = t.job_id WHERE t.task_id = ?
               UNION ALL SELECT id, account FROM jobs WHERE task_id = ? LIMIT 1""",
            (task_id, task_id),
        )
        return (int(row[0]), row[1]) if row else None

    async def provider_tasks_used(self, job_id: int) -> int:
        """How many provider tasks this job has had (a resubmission after a temporary failure adds one)."""
        row = await _one(self._db, "SELECT COUNT(*) FROM job_tasks WHERE job_id = ?", (job_id,))
        return int(row[0]) if row else 0

    # --- provider accounts ---------------------------------------------------------------------------
    async def api_key_id(self, account: str) -> str | None:
        """The api_key_id the provider's task list shows on this account's tasks, once learned."""
        row = await _one(self._db, "SELECT api_key_id FROM provider_keys WHERE account = ?", (account,))
        return str(row[0]) if row else None

    async def save_api_key_id(self, account: str, api_key_id: str, now: datetime | None = None) -> None:
        async with self._transaction() as db:
            await db.execute(
                """INSERT INTO provider_keys (account, api_key_id, learned_at) VALUES (?, ?, ?)
                   ON CONFLICT (account) DO UPDATE SET api_key_id = excluded.api_key_id,
                       learned_at = excluded.learned_at""",
                (account, api_key_id, _iso(now or utcnow())),
            )

    async def count_by_state(self) -> dict[JobState, int]:
        rows = await self._db.execute_fetchall("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {JobState(r[0]): int(r[1]) for r in rows}

    async def recent_durations(self, model: str, resolution: str, limit: int = 50) -> list[tuple[float, float]]:
        """(queued-at-provider seconds, running seconds) of the latest finished jobs of this tier."""
        rows = await self._db.execute_fetchall(
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
        rows = await self._db.execute_fetchall(
            """SELECT account, model, submitted_at FROM jobs
               WHERE submitted_at IS NOT NULL AND submitted_at >= ? AND account IS NOT NULL""",
            (_iso(since),),
        )
        return [(r[0], r[1], _required_dt(r[2])) for r in rows]

    async def jobs_with_media_before(self, before: datetime) -> list[Job]:
        """Final jobs finished before `before` that still reference a stored video."""
        rows = await self._db.execute_fetchall(
            """SELECT * FROM jobs WHERE state IN ('delivered', 'failed', 'canceled')
               AND finished_at IS NOT NULL AND finished_at < ? AND video_path IS NOT NULL""",
            (_iso(before),),
        )
        return [_job(r) for r in rows]

    async def frames_in_use(self, finished_after: datetime) -> set[str]:
        """Frames referenced by unfinished jobs or by jobs finished after the cut-off (regenerate needs them)."""
        rows = await self._db.execute_fetchall(
            """SELECT first_frame, last_frame FROM jobs
               WHERE state NOT IN ('delivered', 'failed', 'canceled') OR finished_at IS NULL OR finished_at >= ?""",
            (_iso(finished_after),),
        )
        refs: set[str] = set()
        for first, last in rows:
            refs.add(first)
            if last:
                refs.add(last)
        return refs

    # --- money ---------------------------------------------------------------------------------------
    async def guild_usage(self, guild_id: int, user_id: int, period_day: str, period_month: str) -> GuildUsage:
        return await self._usage(self._db, guild_id, user_id, period_day, period_month)

    async def ledger(self, guild_id: int | None = None) -> list[LedgerEntry]:
        if guild_id is None:
            rows = await self._db.execute_fetchall("SELECT * FROM ledger ORDER BY id")
        else:
            rows = await self._db.execute_fetchall("SELECT * FROM ledger WHERE guild_id = ? ORDER BY id", (guild_id,))
        return [
            LedgerEntry(r["id"], r["job_id"], r["guild_id"], r["kind"], r["amount"], _required_dt(r["at"]))
            for r in rows
        ]

    async def top_spenders(self, guild_id: int, period_month: str, limit: int = 5) -> list[tuple[int, int, int]]:
        """(user_id, videos, milli-CNY counted) this month, biggest first."""
        rows = await self._db.execute_fetchall(
            """SELECT user_id, COUNT(*),
                      SUM(CASE charge_state WHEN 'settled' THEN cost_settled
                                            WHEN 'reserved' THEN cost_reserved ELSE 0 END) AS used
               FROM jobs WHERE guild_id = ? AND period_month = ? AND charge_state != 'released'
               GROUP BY user_id ORDER BY used DESC LIMIT ?""",
            (guild_id, period_month, limit),
        )
        return [(int(r[0]), int(r[1]), int(r[2])) for r in rows]

    async def spend_by_guild(self) -> dict[int, int]:
        rows = await self._db.execute_fetchall(
            "SELECT guild_id, SUM(cost_settled) FROM jobs WHERE charge_state = 'settled' GROUP BY guild_id"
        )
        return {int(r[0]): int(r[1]) for r in rows}

    # --- guild policies ------------------------------------------------------------------------------
    async def get_policy(self, guild_id: int) -> GuildPolicy:
        return await self._policy(self._db, guild_id)

    async def policy_and_usage(
        self, guild_id: int, user_id: int, period_day: str, period_month: str
    ) -> tuple[GuildPolicy, GuildUsage]:
        """Read-only, outside any transaction: for a cheap early refusal, never for the decision itself."""
        return await self._policy_and_usage(self._db, guild_id, user_id, period_day, period_month)

    async def save_policy(self, policy: GuildPolicy) -> GuildPolicy:
        """Write every column of `policy` (a whole new policy; to change some fields, `update_policy`)."""
        return await self.update_policy(
            policy.guild_id,
            daily_budget=policy.daily_budget,
            monthly_budget=policy.monthly_budget,
            member_daily_videos=policy.member_daily_videos,
            user_queue_limit=policy.user_queue_limit,
            allowed_channels=policy.allowed_channels,
            paused=policy.paused,
        )

    async def update_policy(
        self,
        guild_id: int,
        /,
        *,
        edit_channels: ChannelEdit | None = None,
        **columns: Any,
    ) -> GuildPolicy:
        """Set only the given columns, in one transaction, and return the policy as it now stands.

        Column-level on purpose: an owner's budget change and a manager's member limits, made at the same
        moment, both stay (a read-modify-write of the whole row would let the later one revert the other).
        `edit_channels` turns the allowed channels into new ones inside the same transaction (two managers
        allowing a channel each keep both); whatever it raises leaves the policy untouched.
        """
        unknown = set(columns) - _POLICY_COLUMNS
        if unknown:
            raise ValueError(f"not guild policy columns: {sorted(unknown)}")
        async with self._transaction() as db:
            await db.execute("INSERT INTO guild_policies (guild_id) VALUES (?) ON CONFLICT DO NOTHING", (guild_id,))
            if edit_channels is not None:
                columns["allowed_channels"] = edit_channels((await self._policy(db, guild_id)).allowed_channels)
            values = {name: _policy_db_value(name, value) for name, value in columns.items()}
            if values:
                # Column names were checked against _POLICY_COLUMNS above, never taken from users.
                assignments = ", ".join(f"{name} = ?" for name in values)
                await db.execute(
                    f"UPDATE guild_policies SET {assignments} WHERE guild_id = ?",  # noqa: S608
                    (*values.values(), guild_id),
                )
            return await self._policy(db, guild_id)

    # --- meta ----------------------------------------------------------------------------------------
    async def get_meta(self, key: str) -> str | None:
        row = await _one(self._db, "SELECT value FROM meta WHERE key = ?", (key,))
        return str(row[0]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # --- pauses (kept in meta: the owners' pause of everything, and each guild's) ------------------------
    async def pauses(self) -> list[Pause]:
        """The persisted pauses (scopes ALL and GUILD), including the pre-issue-11 global pause."""
        found: list[Pause] = []
        async with self._db.execute(
            "SELECT key, value FROM meta WHERE key LIKE 'pause:%' OR key = ?", (_OLD_PAUSE_KEY,)
        ) as cursor:
            rows = list(await cursor.fetchall())
        for key, value in rows:
            if key == _OLD_PAUSE_KEY:
                if value:  # a reason with no time: paused since an unknown moment, shown as now
                    found.append(Pause(PauseScope.ALL, "", str(value), utcnow()))
                continue
            data = json.loads(value)
            found.append(
                Pause(PauseScope(data["scope"]), str(data["target"]), str(data["reason"]), _required_dt(data["since"]))
            )
        return found

    async def save_pause(self, pause: Pause) -> None:
        """Persist a pause (replacing one of the same scope and target)."""
        value = json.dumps({"scope": pause.scope.value, "target": pause.target, "reason": pause.reason,
                            "since": _iso(pause.since)})  # fmt: skip
        await self.set_meta(_pause_key(pause.scope, pause.target), value)

    async def delete_pause(self, scope: PauseScope, target: str) -> None:
        """Forget a persisted pause (no error when there was none)."""
        async with self._transaction() as db:
            keys = (_pause_key(scope, target), _OLD_PAUSE_KEY if scope is PauseScope.ALL else "")
            await db.execute("DELETE FROM meta WHERE key IN (?, ?)", keys)

    async def ping(self) -> bool:
        row = await _one(self._db, "SELECT 1")
        return row is not None

    # --- internals -----------------------------------------------------------------------------------
    @staticmethod
    async def _get(db: aiosqlite.Connection, job_id: int) -> Job | None:
        row = await _one(db, "SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(row) if row else None

    @staticmethod
    async def _update(db: aiosqlite.Connection, job_id: int, values: dict[str, Any]) -> None:
        # Column names come from UPDATABLE_FIELDS or this module, never from users.
        assignments = ", ".join(f"{name} = ?" for name in values)
        await db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values.values(), job_id))  # noqa: S608
        task_id = values.get("task_id")
        if task_id is not None:  # remembered for good, even after a resubmission clears jobs.task_id
            await db.execute(
                "INSERT OR IGNORE INTO job_tasks (task_id, job_id, at) VALUES (?, ?, ?)",
                (task_id, job_id, values.get("updated_at") or _iso(utcnow())),
            )

    @staticmethod
    async def _event(
        db: aiosqlite.Connection, job_id: int, state: JobState, now: datetime, detail: str | None = None
    ) -> None:
        await db.execute(
            "INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)",
            (job_id, state.value, _iso(now), detail),
        )

    @staticmethod
    async def _ledger(
        db: aiosqlite.Connection, job_id: int, guild_id: int, kind: str, amount: int, now: datetime
    ) -> None:
        await db.execute(
            "INSERT INTO ledger (job_id, guild_id, kind, amount, at) VALUES (?, ?, ?, ?, ?)",
            (job_id, guild_id, kind, amount, _iso(now)),
        )

    @staticmethod
    async def _policy(db: aiosqlite.Connection, guild_id: int) -> GuildPolicy:
        row = await _one(db, "SELECT * FROM guild_policies WHERE guild_id = ?", (guild_id,))
        return _policy_from(guild_id, row)

    @staticmethod
    async def _usage(
        db: aiosqlite.Connection, guild_id: int, user_id: int, period_day: str, period_month: str
    ) -> GuildUsage:
        _, usage = await JobStore._policy_and_usage(db, guild_id, user_id, period_day, period_month)
        return usage

    @staticmethod
    async def _policy_and_usage(
        db: aiosqlite.Connection, guild_id: int, user_id: int, period_day: str, period_month: str
    ) -> tuple[GuildPolicy, GuildUsage]:
        """The guild's policy and usage in one statement: one trip to the database thread instead of four
        (admission runs this inside its transaction, under the write lock)."""
        params = (guild_id, period_day, guild_id, period_month, period_day, guild_id, user_id, guild_id)
        row = await _one(db, _POLICY_AND_USAGE_SQL, params)
        assert row is not None
        usage = GuildUsage(
            spent_day=int(row["spent_day"]),
            reserved_day=int(row["reserved_day"]),
            spent_month=int(row["spent_month"]),
            reserved_month=int(row["reserved_month"]),
            member_videos_today=int(row["member_today"]),
            member_active_jobs=int(row["member_active"]),
        )
        return _policy_from(guild_id, row if row["policy_guild"] is not None else None), usage


# Turns a guild's allowed channels into new ones (inside the policy transaction).
ChannelEdit = Callable[[tuple[int, ...]], tuple[int, ...]]
_POLICY_COLUMNS = frozenset(
    {"daily_budget", "monthly_budget", "member_daily_videos", "user_queue_limit", "allowed_channels", "paused"}
)


_OLD_PAUSE_KEY = "paused"  # the owners' global pause before pauses had scopes: its reason only


def _pause_key(scope: PauseScope, target: str) -> str:
    return f"pause:{scope.value}:{target}"


def _policy_db_value(name: str, value: Any) -> Any:
    if name == "allowed_channels":
        return json.dumps([int(c) for c in value])
    if name == "paused":
        return int(bool(value))
    return value


def _policy_from(guild_id: int, row: aiosqlite.Row | None) -> GuildPolicy:
    """A guild_policies row (or the same columns of a join); None: the defaults apply."""
    if row is None:
        return GuildPolicy(guild_id=guild_id)
    return GuildPolicy(
        guild_id=guild_id,
        daily_budget=row["daily_budget"],
        monthly_budget=row["monthly_budget"],
        member_daily_videos=row["member_daily_videos"],
        user_queue_limit=row["user_queue_limit"],
        allowed_channels=tuple(int(c) for c in json.loads(row["allowed_channels"])),
        paused=bool(row["paused"]),
    )


# A guild's spend today and this month, a member's videos today and unfinished jobs (three aggregates, each
# over its own index: jobs_guild_day, jobs_guild_month, jobs_user) and the guild's policy row if any.
_POLICY_AND_USAGE_SQL = """SELECT d.spent AS spent_day, d.reserved AS reserved_day,
        m.spent AS spent_month, m.reserved AS reserved_month, u.today AS member_today, u.active AS member_active,
        p.guild_id AS policy_guild, p.daily_budget, p.monthly_budget, p.member_daily_videos, p.user_queue_limit,
        p.allowed_channels, p.paused
    FROM
    (SELECT COALESCE(SUM(CASE WHEN charge_state = 'settled' THEN cost_settled ELSE 0 END), 0) AS spent,
            COALESCE(SUM(CASE WHEN charge_state = 'reserved' THEN cost_reserved ELSE 0 END), 0) AS reserved
     FROM jobs WHERE guild_id = ? AND period_day = ?) AS d,
    (SELECT COALESCE(SUM(CASE WHEN charge_state = 'settled' THEN cost_settled ELSE 0 END), 0) AS spent,
            COALESCE(SUM(CASE WHEN charge_state = 'reserved' THEN cost_reserved ELSE 0 END), 0) AS reserved
     FROM jobs WHERE guild_id = ? AND period_month = ?) AS m,
    (SELECT COALESCE(SUM(CASE WHEN period_day = ? AND charge_state != 'released' THEN 1 ELSE 0 END), 0) AS today,
            COALESCE(SUM(CASE WHEN state NOT IN ('delivered', 'failed', 'canceled', 'succeeded')
                              THEN 1 ELSE 0 END), 0) AS active
     FROM jobs WHERE guild_id = ? AND user_id = ?) AS u
    LEFT JOIN guild_policies AS p ON p.guild_id = ?"""


class StaleState(Exception):
    """The job is no longer in the state the caller expected (someone else moved it)."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} is {job.state}")
        self.job = job


async def _one(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
    """First row of a query, executed and fetched in one step so no other coroutine's statement can
    interleave between the two on the shared connection."""
    rows = list(await db.execute_fetchall(sql, params))
    return rows[0] if rows else None


def _prepare_file(path: Path) -> None:
    """Create the folder and an empty database file readable by the owner only (prompts are private)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


def _split_sql(script: str) -> Sequence[str]:
    """Split a migration file into statements (the files hold no triggers or string semicolons)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


__all__ = ["JobStore", "StaleState", "StoreError", "utcnow"]
