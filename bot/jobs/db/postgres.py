"""PostgreSQL behind the `Database` interface: an asyncpg pool, READ COMMITTED plus explicit locks.

Besides the job schema (the numbered migrations) the engine keeps two bookkeeping tables of its own:
`kf2v_schema_version` (SQLite keeps the version in PRAGMA user_version) and `kf2v_leases` (one row per
lease: holder, epoch, expiry by the server's clock, so hosts with skewed clocks agree).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg

from bot.jobs.db.base import (
    Database,
    LeaseLost,
    NotifyCallback,
    Params,
    Row,
    Transaction,
    TransientConflict,
    check_channel,
    lock_id,
)
from bot.jobs.db.sql import redact_url, to_numbered

log = logging.getLogger(__name__)

_CONFLICTS = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
_BOOKKEEPING_LOCK = "schema"
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 60.0
# Reconnect attempts at most this far apart: a cut that ends is noticed within it.
RELISTEN_MAX_DELAY_S = 2.0  # also taken by the migration runner

BOOKKEEPING_SQL = """
CREATE TABLE IF NOT EXISTS kf2v_schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kf2v_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
"""

# Free, expired or the caller's own: take it. A new epoch whenever the lease changes hands or had lapsed,
# so anything still acting on an older epoch fails its fencing check.
_ACQUIRE_SQL = """
INSERT INTO kf2v_leases AS l (name, holder, epoch, expires_at)
VALUES ($1, $2, 1, clock_timestamp() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE SET
    holder = EXCLUDED.holder,
    epoch = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp() THEN l.epoch
                 ELSE l.epoch + 1 END,
    expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= clock_timestamp() OR l.holder = EXCLUDED.holder
RETURNING epoch
"""
_RENEW_SQL = """UPDATE kf2v_leases SET expires_at = clock_timestamp() + make_interval(secs => $4)
WHERE name = $1 AND holder = $2 AND epoch = $3"""
# Expired now (not '-infinity'): how long nobody has held a lease stays readable (`lease_expires_in`).
_RELEASE_SQL = "UPDATE kf2v_leases SET expires_at = clock_timestamp() WHERE name = $1 AND holder = $2 AND epoch = $3"
# FOR SHARE: a takeover's UPDATE of this row waits until the checking transaction has committed, so the new
# holder's reconciliation sees every write made under the old epoch. That is also why an expired lease nobody
# took over still fences correctly: a takeover bumps the epoch only after this transaction ends.
_CHECK_EPOCH_SQL = "SELECT epoch FROM kf2v_leases WHERE name = $1 FOR SHARE"
_EXPIRES_IN_SQL = """SELECT CASE WHEN isfinite(expires_at)
    THEN EXTRACT(EPOCH FROM expires_at - clock_timestamp())::float8 ELSE '-Infinity'::float8 END
FROM kf2v_leases WHERE name = $1"""


def _changed(status: str) -> int:
    """Rows changed, from a command tag such as 'UPDATE 3' or 'INSERT 0 1'."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _PostgresTransaction(Transaction):
    dialect = "postgresql"

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._conn = connection
        self.notifications: list[tuple[str, str]] = []

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return cast(list[Row], await self._conn.fetch(to_numbered(sql), *params))

    async def execute(self, sql: str, params: Params = ()) -> int:
        return _changed(await self._conn.execute(to_numbered(sql), *params))

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        await self._conn.executemany(to_numbered(sql), rows)

    async def execute_script(self, script: str) -> None:
        await self._conn.execute(script)  # no arguments: the simple protocol runs every statement

    async def lock(self, key: str) -> None:
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", lock_id(key))

    async def lock_rows(self, sql: str, params: Params = ()) -> list[Row]:
        return await self.fetch_all(f"{sql} FOR UPDATE", params)

    def notify(self, channel: str, payload: str = "") -> None:
        self.notifications.append((check_channel(channel), payload))

    async def check_epoch(self, name: str, epoch: int) -> None:
        row = await self._conn.fetchrow(_CHECK_EPOCH_SQL, name)
        if row is None or row["epoch"] != epoch:
            raise LeaseLost(f"lease {name!r}: epoch {epoch} is not the live one")

    async def send_notifications(self) -> None:
        # pg_notify inside the transaction: PostgreSQL delivers them at commit, and drops them on rollback.
        for channel, payload in self.notifications:
            await self._conn.execute("SELECT pg_notify($1, $2)", channel, payload)


class PostgresDatabase(Database):
    """`Database` on an asyncpg pool; leases and notifications are shared by every process."""

    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self._url = url
        self._listener: asyncpg.Connection | None = None
        self._listener_lock = asyncio.Lock()
        self._subscriptions: list[tuple[str, Callable[..., None]]] = []
        self._closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._on_reconnect: list[Callable[[], None]] = []

    @classmethod
    async def open(cls, url: str, *, max_connections: int = 10) -> PostgresDatabase:
        """Connect a pool of up to `max_connections` and create the lease bookkeeping table if missing."""
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=max_connections,
            timeout=CONNECT_TIMEOUT_S,
            # A statement on a connection that died without a word (no reset reached us) fails instead of
            # waiting for ever; the caller retries it as a database fault.
            command_timeout=COMMAND_TIMEOUT_S,
            server_settings={"application_name": "kf2v-bot"},
        )
        db = cls(pool, url)
        async with db.transaction() as tx:
            await tx.lock(_BOOKKEEPING_LOCK)  # concurrent CREATE TABLE IF NOT EXISTS can still collide
            await tx.execute_script(BOOKKEEPING_SQL)
        return db

    def __repr__(self) -> str:
        return f"PostgresDatabase({redact_url(self._url)!r})"

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """On a pooled connection, `?` placeholders rewritten to `$n`."""
        async with self._pool.acquire() as conn:
            return cast(list[Row], await conn.fetch(to_numbered(sql), *params))

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One statement on a pooled connection (autocommit); the number of rows it changed."""
        async with self._pool.acquire() as conn:
            try:
                return _changed(await conn.execute(to_numbered(sql), *params))
            except _CONFLICTS as exc:
                raise TransientConflict(str(exc)) from exc

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        """All rows in one transaction."""
        async with self.transaction() as tx:
            await tx.execute_many(sql, rows)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A transaction on a connection held from the pool until the block ends."""
        async with self._pool.acquire() as conn:
            tx = _PostgresTransaction(conn)
            try:
                async with conn.transaction(isolation="read_committed"):
                    yield tx
                    await tx.send_notifications()
            except _CONFLICTS as exc:
                raise TransientConflict(str(exc)) from exc

    # --- leases --------------------------------------------------------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """The lease row is taken or renewed in one statement, so two processes cannot both win."""
        async with self._pool.acquire() as conn:
            epoch = await conn.fetchval(_ACQUIRE_SQL, name, holder, float(ttl))
        return int(epoch) if epoch is not None else None

    async def renew_lease(self, name: str, holder: str, epoch: int, ttl: float) -> bool:
        """False when the row's holder or epoch changed (taken over)."""
        async with self._pool.acquire() as conn:
            return _changed(await conn.execute(_RENEW_SQL, name, holder, epoch, float(ttl))) == 1

    async def release_lease(self, name: str, holder: str, epoch: int) -> None:
        """Expire the row now if this holder and epoch still own it; otherwise a no-op."""
        async with self._pool.acquire() as conn:
            await conn.execute(_RELEASE_SQL, name, holder, epoch)

    async def lease_expires_in(self, name: str) -> float | None:
        """By the server's clock; negative once lapsed (a lease released long ago: -inf)."""
        async with self._pool.acquire() as conn:
            value = await conn.fetchval(_EXPIRES_IN_SQL, name)
        return None if value is None else float(value)

    async def ping(self) -> bool:
        """`SELECT 1` on a pooled connection."""
        async with self._pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT 1") == 1)

    # --- LISTEN/NOTIFY -------------------------------------------------------------------------------
    async def listen(self, channel: str, callback: NotifyCallback) -> Callable[[], Awaitable[None]]:
        """One dedicated connection carries every LISTEN of this process (a pooled one would be reused).

        Notifications are hints, not a queue: one sent while the connection is being re-established is
        lost, so listeners re-read the database after a reconnect (logged as a warning).
        """
        check_channel(channel)

        def deliver(_conn: Any, _pid: int, chan: str, payload: str) -> None:
            callback(chan, payload)

        async with self._listener_lock:
            conn = await self._listener_connection()
            await conn.add_listener(channel, deliver)
            self._subscriptions.append((channel, deliver))

        async def stop() -> None:
            async with self._listener_lock:
                if (channel, deliver) in self._subscriptions:
                    self._subscriptions.remove((channel, deliver))
                    if self._listener is not None and not self._listener.is_closed():
                        await self._listener.remove_listener(channel, deliver)

        return stop

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """`callback()` after every re-established LISTEN connection: what was notified meanwhile is lost."""
        self._on_reconnect.append(callback)

    async def _listener_connection(self) -> asyncpg.Connection:
        if self._listener is None or self._listener.is_closed():
            self._listener = await asyncpg.connect(
                self._url, timeout=CONNECT_TIMEOUT_S, server_settings={"application_name": "kf2v-bot"}
            )
            self._listener.add_termination_listener(self._listener_lost)
        return self._listener

    def _listener_lost(self, _conn: Any) -> None:
        if self._closing:
            return
        log.warning("PostgreSQL LISTEN connection to %s lost; reconnecting", redact_url(self._url))
        self._reconnect_task = asyncio.get_running_loop().create_task(self._relisten())

    async def _relisten(self) -> None:
        delay = 0.5
        while not self._closing:
            try:
                async with self._listener_lock:
                    conn = await self._listener_connection()
                    for channel, deliver in self._subscriptions:
                        await conn.add_listener(channel, deliver)
                log.info("PostgreSQL LISTEN connection re-established; re-reading what was missed")
                for callback in list(self._on_reconnect):
                    try:
                        callback()
                    except Exception:
                        log.exception("a reconnect callback failed")
                return
            except Exception as exc:  # every failure is retried: a listener that gave up would miss every job
                log.warning("LISTEN reconnect failed (%s); retrying in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RELISTEN_MAX_DELAY_S)

    async def close(self) -> None:
        """Stop reconnecting listeners, then close the pool."""
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        await self._pool.close()
