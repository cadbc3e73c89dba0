"""One dispatcher per provider account across processes: the `dispatch:<account>` leases (issue 14).

The process holding an account's lease is the only one that submits, polls and delivers for it. It renews
the lease every `ttl / 3`; a process that dies stops renewing, and a standby takes the lease once it expired
(at most `ttl + retry_s` after the last renewal) with a larger epoch. Fencing: the store checks the epoch in
the same transaction as every submission write (`JobStore.fence_for`), so a holder that was paused past
its lease (a GC pause, a frozen VM) and wakes up still believing it holds it cannot write SUBMITTING or a
task id once another process took over; it gets `LeaseLost` and stops.

All accounts are taken together (in sorted order, all or none) so one process is the dispatcher: the
worker's scheduler decides across accounts, and splitting them would need one scheduler per account.

On SQLite (one process) the leases are in-process and always granted: behaviour is exactly as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable

from bot.jobs.db import Database, DatabaseError, is_database_fault

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 6.0  # takeover within ttl + retry (<= 10 s, issue 14's target)
DEFAULT_RETRY_S = 1.0
RELEASED_CHANNEL = "kf2v_lease_released"  # a graceful stop tells standbys to try at once


def lease_name(account: str) -> str:
    """The database lease that lets one process submit for `account`."""
    return f"dispatch:{account}"


class DispatchLease:
    """The dispatcher leases of every account, held together by this process (`holder`)."""

    def __init__(
        self,
        db: Database,
        accounts: Iterable[str],
        holder: str,
        *,
        ttl: float = DEFAULT_TTL_S,
        retry_s: float = DEFAULT_RETRY_S,
    ) -> None:
        self._db = db
        self.accounts = sorted(set(accounts))
        self.holder = holder
        self.ttl = ttl
        self.retry_s = retry_s
        self.epochs: dict[str, int] = {}
        self._released = asyncio.Event()

    @property
    def held(self) -> bool:
        """True only while every account's lease is held (none are held without the others)."""
        return bool(self.accounts) and len(self.epochs) == len(self.accounts)

    async def unheld_for(self) -> float:
        """Seconds since any process last held every account's lease (0 while one does), by the database's clock.

        A lease never taken counts as unheld for ever (inf)."""
        lapsed = 0.0
        for account in self.accounts:
            expires_in = await self._db.lease_expires_in(lease_name(account))
            lapsed = max(lapsed, float("inf") if expires_in is None else max(0.0, -expires_in))
        return lapsed

    def fence_for(self, account: str) -> tuple[str, int] | None:
        """(lease name, epoch) to check with a submission write for `account`; None when not held."""
        epoch = self.epochs.get(account)
        return None if epoch is None else (lease_name(account), epoch)

    async def acquire(self) -> bool:
        """Take every account's lease, or none of them."""
        taken: dict[str, int] = {}
        for account in self.accounts:
            epoch = await self._db.acquire_lease(lease_name(account), self.holder, self.ttl)
            if epoch is None:
                for got, got_epoch in taken.items():  # let the holder of the rest have these too
                    await self._db.release_lease(lease_name(got), self.holder, got_epoch)
                return False
            taken[account] = epoch
        self.epochs = taken
        return True

    async def renew(self) -> bool:
        """Extend every lease; False (and nothing held any more) when any was taken over."""
        for account, epoch in list(self.epochs.items()):
            if not await self._db.renew_lease(lease_name(account), self.holder, epoch, self.ttl):
                self.epochs.clear()
                return False
        return True

    async def release(self) -> None:
        """Give every lease up now; database and network errors are ignored (they expire anyway)."""
        epochs, self.epochs = self.epochs, {}
        for account, epoch in epochs.items():
            try:
                await self._db.release_lease(lease_name(account), self.holder, epoch)
            except Exception as exc:
                log.info("dispatcher lease %s not released (%s); it expires by itself", account, type(exc).__name__)
        if epochs:
            with contextlib.suppress(Exception):
                await self._db.notify(RELEASED_CHANNEL, self.holder)

    async def hold(
        self,
        on_acquired: Callable[[], Awaitable[None]],
        on_lost: Callable[[], Awaitable[None]],
    ) -> None:
        """Until cancelled: wait for the leases, run `on_acquired`, renew; on a takeover run `on_lost` and wait
        again. Cancelling releases the leases (a graceful stop hands over at once).

        Never abandoned: an `on_acquired` that fails (the database went away during recovery) is run again
        with back-off while the leases are kept renewed, and database faults only delay a renewal."""
        stop_listening = await self._listen_for_releases()
        try:
            while True:
                await self._wait_for_leases()
                log.info("dispatcher leases taken for %s (epochs %s)", ", ".join(self.accounts), self.epochs)
                if await self._start(on_acquired):
                    while await self._renew_after(self.ttl / 3):
                        pass
                log.warning("dispatcher lease lost to another process; this one stops dispatching")
                await on_lost()
        finally:
            await self.release()
            if stop_listening is not None:
                with contextlib.suppress(DatabaseError, OSError):
                    await stop_listening()

    async def _listen_for_releases(self) -> Callable[[], Awaitable[None]] | None:
        """Listen for other holders' graceful releases (a hint: without it, leases are asked for every retry_s)."""
        try:
            return await self._db.listen(RELEASED_CHANNEL, lambda _c, _p: self._released.set())
        except Exception as exc:
            if not is_database_fault(exc):
                raise
            log.warning("dispatcher lease: not listening for releases (%s); asking every %.1f s", exc, self.retry_s)
            return None

    async def _start(self, on_acquired: Callable[[], Awaitable[None]]) -> bool:
        """Run `on_acquired` until it succeeds, keeping the leases renewed in between; False if they were lost."""
        delay = self.retry_s
        while True:
            try:
                await on_acquired()
                return True
            except Exception:
                log.exception("dispatcher lease: starting to dispatch failed; again in %.1f s (leases kept)", delay)
            if not await self._renew_after(delay):
                return False
            delay = min(delay * 2, self.ttl / 3)

    async def _wait_for_leases(self) -> None:
        while True:
            try:
                if await self.acquire():
                    return
            except Exception as exc:  # the database is away: stay a standby, try again
                if not is_database_fault(exc):
                    raise
                log.warning("dispatcher lease: %s: %s", type(exc).__name__, exc)
            self._released.clear()
            # Jitter so standbys don't all ask in the same instant after a release.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.retry_s * random.uniform(0.5, 1.0))  # noqa: S311

    async def _renew_after(self, delay: float) -> bool:
        await asyncio.sleep(delay)
        try:
            return await self.renew()
        except Exception as exc:
            if not is_database_fault(exc):
                raise
            # Unsure whether it was renewed: keep trying until the lease would have expired; fencing
            # protects the writes meanwhile.
            log.warning("dispatcher lease renewal failed: %s", exc)
            return True
