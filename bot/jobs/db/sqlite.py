"""SQLite behind the `Database` interface: one aiosqlite connection, WAL, writers serialised.

Reads outside a transaction share the one connection, as the store's reads always have: one made while
another coroutine's transaction is open sees that transaction's writes.

Single-process by design: leases and notifications are in-process equivalents of the PostgreSQL ones, so
the code that uses them runs unchanged with the default engine.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import aiosqlite

from bot.jobs.db.base import (
    Database,
    LeaseLost,
    NotifyCallback,
    Params,
    Row,
    Transaction,
    check_channel,
)
from bot.jobs.db.sql import split_script


@dataclass
class _Lease:
    holder: str
    epoch: int
    expires_at: float  # time.monotonic()

    def live(self) -> bool:
        return self.expires_at > time.monotonic()


class _SqliteTransaction(Transaction):
    dialect = "sqlite"

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self.notifications: list[tuple[str, str]] = []

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._db.fetch_all(sql, params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._db.connection.execute(sql, params) as cursor:
            return max(cursor.rowcount, 0)

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        await self._db.connection.executemany(sql, rows)

    async def execute_script(self, script: str) -> None:
        for statement in split_script(script):
            await self._db.connection.execute(statement)

    async def lock(self, key: str) -> None:
        """BEGIN IMMEDIATE already holds the file's write lock: every writer is serialised."""

    def notify(self, channel: str, payload: str = "") -> None:
        self.notifications.append((check_channel(channel), payload))

    async def check_epoch(self, name: str, epoch: int) -> None:
        # An expired lease nobody took over is still safe to write under: whoever takes it gets a new epoch.
        lease = self._db.leases.get(name)
        if lease is None or lease.epoch != epoch:
            raise LeaseLost(f"lease {name!r}: epoch {epoch} is not the live one")


class SqliteDatabase(Database):
    """`Database` on one aiosqlite connection; leases and notifications live in this process only."""

    dialect = "sqlite"

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self.connection = connection
        self.path = path
        self.leases: dict[str, _Lease] = {}
        self._write_lock = asyncio.Lock()
        self._writer: asyncio.Task[object] | None = None
        self._listeners: dict[str, list[NotifyCallback]] = {}

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        """Open (creating if needed) the file at `path` in autocommit mode; transactions BEGIN explicitly."""
        await asyncio.to_thread(prepare_file, path)
        connection = await aiosqlite.connect(path, isolation_level=None)  # autocommit; we BEGIN explicitly
        connection.row_factory = aiosqlite.Row
        # secure_delete: freed space is zeroed, so an erased prompt (issue 19) doesn't linger in a free page.
        pragmas = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000", "secure_delete=ON")
        for pragma in pragmas:
            await connection.execute(f"PRAGMA {pragma}")
        return cls(connection, path)

    def __repr__(self) -> str:
        return f"SqliteDatabase({str(self.path)!r})"

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Executed and fetched in one step on the shared connection."""
        # Executed and fetched in one step so no other coroutine's statement interleaves on the connection.
        return cast(list[Row], list(await self.connection.execute_fetchall(sql, params)))

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One statement in its own transaction; the number of rows it changed."""
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        """All rows in one transaction."""
        async with self.transaction() as tx:
            await tx.execute_many(sql, rows)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """BEGIN IMMEDIATE, one writer at a time; a nested transaction in the same task raises `RuntimeError`."""
        current = asyncio.current_task()
        if current is not None and self._writer is current:
            # The shared connection would silently fold the inner one into the outer transaction.
            raise RuntimeError("nested transaction on the same SQLite database")
        async with self._write_lock:
            self._writer = current
            tx = _SqliteTransaction(self)
            try:
                await self.connection.execute("BEGIN IMMEDIATE")
                try:
                    yield tx
                except BaseException:
                    await self.connection.execute("ROLLBACK")
                    raise
                await self.connection.execute("COMMIT")
            finally:
                self._writer = None
        self._deliver(tx.notifications)

    async def truncate_wal(self) -> bool:
        """Copy the WAL into the database file and cut it to zero bytes, so row versions overwritten by an erasure
        don't linger in it; False when a reader kept the checkpoint from completing (try again later)."""
        async with self._write_lock:  # between transactions: a checkpoint inside one can't complete
            rows = list(await self.connection.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)"))
        return bool(rows) and int(rows[0][0]) == 0

    # --- in-process leases ---------------------------------------------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """In-process lease (one process owns the file); a new epoch whenever the holder changes."""
        lease = self.leases.get(name)
        expires = time.monotonic() + ttl
        if lease is not None and lease.live() and lease.holder != holder:
            return None
        if lease is not None and lease.live():
            lease.expires_at = expires
            return lease.epoch
        epoch = (lease.epoch if lease else 0) + 1
        self.leases[name] = _Lease(holder, epoch, expires)
        return epoch

    async def renew_lease(self, name: str, holder: str, epoch: int, ttl: float) -> bool:
        """False when the lease's holder or epoch changed (taken over)."""
        lease = self.leases.get(name)
        if lease is None or lease.holder != holder or lease.epoch != epoch:
            return False
        lease.expires_at = time.monotonic() + ttl
        return True

    async def release_lease(self, name: str, holder: str, epoch: int) -> None:
        """Expire the lease now if this holder and epoch still own it; the epoch is kept."""
        lease = self.leases.get(name)
        if lease is not None and lease.holder == holder and lease.epoch == epoch:
            lease.expires_at = time.monotonic()  # the epoch stays: the next holder gets a larger one

    async def lease_expires_in(self, name: str) -> float | None:
        """Seconds until the in-process lease expires (negative once lapsed)."""
        lease = self.leases.get(name)
        return None if lease is None else lease.expires_at - time.monotonic()

    async def ping(self) -> bool:
        """True when the file can be read and written now: a fresh connection takes the write lock within
        `PING_TIMEOUT_S` and reads the schema. A locked file (another process holding a write transaction) is
        unavailable even though reads still work: nothing the bot does can be recorded."""
        return await asyncio.to_thread(_probe_file, self.path)

    # --- in-process notifications --------------------------------------------------------------------
    async def listen(self, channel: str, callback: NotifyCallback) -> Callable[[], Awaitable[None]]:
        """This process only: `callback` runs soon after a transaction that notified `channel` commits."""
        callbacks = self._listeners.setdefault(check_channel(channel), [])
        callbacks.append(callback)

        async def stop() -> None:
            if callback in callbacks:
                callbacks.remove(callback)

        return stop

    def _deliver(self, notifications: list[tuple[str, str]]) -> None:
        loop = asyncio.get_running_loop()
        for channel, payload in notifications:
            for callback in list(self._listeners.get(channel, ())):
                loop.call_soon(callback, channel, payload)

    async def close(self) -> None:
        """Close the connection."""
        await self.connection.close()


PING_TIMEOUT_S = 1.0


def _probe_file(path: Path) -> bool:
    probe = sqlite3.connect(path, timeout=PING_TIMEOUT_S, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
        probe.execute("ROLLBACK")
        return True
    finally:
        probe.close()


def prepare_file(path: Path) -> None:
    """Create the folder and an empty database file readable by the owner only (prompts are private)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
