"""The small database interface the job store is written against, for SQLite and PostgreSQL alike.

SQL is written once, in the subset both engines understand, with `?` placeholders. Rows answer both
`row["column"]` and `row[0]`, and iterate over their values like a tuple (sqlite3.Row and asyncpg.Record
both do). Every write that belongs together runs in one `transaction()`, which holds one connection for
its duration.

Isolation (PostgreSQL): transactions run at READ COMMITTED and serialise the decisions that need it with
explicit locks taken first thing in the transaction (`lock(key)`: a transaction-scoped advisory lock;
`lock_rows(sql)`: SELECT ... FOR UPDATE). Why not SERIALIZABLE: an `async with` body cannot be replayed by
the context manager, so every caller would need its own retry loop; and admissions into one guild's budget
are a hot spot where serializable snapshots abort most concurrent attempts and redo their work, while a
lock queues them with no wasted work. READ COMMITTED (not REPEATABLE READ) matters: each statement after
the lock sees everything committed before the lock was granted. SQLite gets the same effect from
BEGIN IMMEDIATE, which already serialises every writer of the file, so `lock` is a no-op there.
Locks are taken in a fixed order (one key per decision, or sorted keys); a deadlock the server still
detects surfaces as `TransientConflict`, which `run_in_transaction` retries.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol, TypeVar

Dialect = Literal["sqlite", "postgresql"]
Params = Sequence[Any]
# Called on the event loop with (channel, payload) after the notifying transaction committed.
NotifyCallback = Callable[[str, str], None]
T = TypeVar("T")


class Row(Protocol):
    """What both drivers' rows offer: column access by name or position, values in column order."""

    def __getitem__(self, key: Any, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...

    def keys(self) -> Iterable[str]:
        """Column names, in select order."""


class DatabaseError(RuntimeError):
    """A database problem phrased for the operator (never carries a password)."""


class TransientConflict(DatabaseError):
    """The server aborted the transaction to keep it consistent (deadlock, serialization); safe to retry."""


class LeaseLost(DatabaseError):
    """The caller's lease epoch is no longer the live one: another holder may be acting; stop writing."""


class Transaction(abc.ABC):
    """One open transaction on one connection. Commits when the `async with` block ends normally."""

    dialect: Dialect

    @abc.abstractmethod
    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row the query returns, read inside this transaction."""

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """The first row, or None when there is none."""
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    @abc.abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""

    @abc.abstractmethod
    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement once per parameter tuple, in this transaction."""

    @abc.abstractmethod
    async def execute_script(self, script: str) -> None:
        """Several statements without parameters (migrations)."""

    @abc.abstractmethod
    async def lock(self, key: str) -> None:
        """Serialise with every other transaction locking the same key until this one ends."""

    async def lock_rows(self, sql: str, params: Params = ()) -> list[Row]:
        """A SELECT whose rows stay locked against other writers until this transaction ends."""
        return await self.fetch_all(sql, params)

    @abc.abstractmethod
    def notify(self, channel: str, payload: str = "") -> None:
        """Queue a notification, delivered to listeners only if and when this transaction commits."""

    @abc.abstractmethod
    async def check_epoch(self, name: str, epoch: int) -> None:
        """Raise `LeaseLost` unless `epoch` is the live epoch of lease `name`; holds it until commit."""


class Database(abc.ABC):
    """A connection (SQLite) or a pool (PostgreSQL) with the same methods on both engines."""

    dialect: Dialect

    @abc.abstractmethod
    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row the query returns (`?` placeholders on both engines)."""

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """The first row, or None when there is none."""
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    @abc.abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """One statement in its own transaction; the number of rows it changed."""

    @abc.abstractmethod
    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement once per parameter tuple, all in one transaction."""

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """An `async with` transaction: commits when the block ends normally, rolls back on an exception."""

    async def run_in_transaction(self, work: Callable[[Transaction], Awaitable[T]], *, attempts: int = 5) -> T:
        """Run `work` in a transaction, again from the start when the server reports a transient conflict."""
        for attempt in range(1, attempts + 1):
            try:
                async with self.transaction() as tx:
                    return await work(tx)
            except TransientConflict:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    # --- coordination between processes (in-process equivalents on SQLite) ---------------------------
    @abc.abstractmethod
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take lease `name` for `ttl` seconds if it is free, expired or already `holder`'s.

        Returns the lease's epoch (a new, larger one whenever the holder changes), or None while another
        holder's lease is live.
        """

    @abc.abstractmethod
    async def renew_lease(self, name: str, holder: str, epoch: int, ttl: float) -> bool:
        """Extend the lease for `ttl` seconds; False if it was taken over meanwhile (stop acting)."""

    @abc.abstractmethod
    async def release_lease(self, name: str, holder: str, epoch: int) -> None:
        """Give the lease up now so another holder need not wait for it to expire."""

    @abc.abstractmethod
    async def lease_expires_in(self, name: str) -> float | None:
        """Seconds until lease `name` expires (negative: it lapsed that long ago); None if never taken."""

    async def ping(self) -> bool:
        """True when the database answers (health checks); raises the engine's error otherwise."""
        return await self.fetch_one("SELECT 1") is not None

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback` after the notification connection was re-established (notifications sent meanwhile
        were lost: re-read the tables). A no-op where notifications cannot be lost (SQLite, in-process)."""
        return None

    async def notify(self, channel: str, payload: str = "") -> None:
        """Send a notification now (its own transaction)."""
        async with self.transaction() as tx:
            tx.notify(channel, payload)

    @abc.abstractmethod
    async def listen(self, channel: str, callback: NotifyCallback) -> Callable[[], Awaitable[None]]:
        """Call `callback` for every notification on `channel`; returns the coroutine function that stops it."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection or pool; the object is unusable afterwards."""


def lock_id(key: str) -> int:
    """A stable signed 64-bit number for a lock key, the same in every process (PostgreSQL advisory locks)."""
    digest = hashlib.blake2b(f"kf2v:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_CHANNEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def check_channel(channel: str) -> str:
    """Channel names are written into LISTEN statements, so only plain lower-case identifiers."""
    if not channel or len(channel) > 63 or not set(channel) <= _CHANNEL_CHARS or channel[0].isdigit():
        raise ValueError(f"channel name {channel!r}: use 1-63 of a-z, 0-9 and _, not starting with a digit")
    return channel
