"""Provider identity: which key each configured account place holds, and the api_key_id the provider's task list
shows on that key's tasks.

Owns the tables provider_keys and account_keys. Binding an account also renames, once, the rows written when
accounts were named by their key's fingerprint (jobs.account, uploads.account), and forgets a rotated key's
uploads: both in the binding's one transaction.

Leases: the dispatcher lease of each account lives in the db layer (`Database.acquire_lease`, the kf2v_leases
bookkeeping table). Here is its fence: a write that acts for an account at the provider (a submission, a
settlement, a delivery) checks, inside its own transaction, that this process still holds the account's live
lease epoch (`Transaction.check_epoch`), so a frozen former holder commits nothing (issues 14 and 17).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from bot.jobs.db import Database, LeaseLost, Transaction
from bot.jobs.models import Job, JobState
from bot.jobs.store.common import StoreBase, iso, utcnow

TABLES = frozenset({"provider_keys", "account_keys"})
USES = frozenset({"jobs", "uploads"})


class IdentityStore(StoreBase):
    """The provider accounts' keys and api_key_ids, and the dispatcher lease's fence."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        # Set by the dispatcher lease when several processes share the database: account -> (lease name,
        # epoch) this process submits under. None (SQLite, one process): no fencing, as always.
        self.fence_for: Callable[[str], tuple[str, int] | None] | None = None

    async def api_key_id(self, account: str) -> str | None:
        """The api_key_id the provider's task list shows on this account's tasks, once learned."""
        row = await self._db.fetch_one("SELECT api_key_id FROM provider_keys WHERE account = ?", (account,))
        return str(row[0]) if row else None

    async def save_api_key_id(self, account: str, api_key_id: str, now: datetime | None = None) -> None:
        """Record (or replace) the api_key_id learned for `account`."""
        async with self._db.transaction() as db:
            await db.execute(
                """INSERT INTO provider_keys (account, api_key_id, learned_at) VALUES (?, ?, ?)
                   ON CONFLICT (account) DO UPDATE SET api_key_id = excluded.api_key_id,
                       learned_at = excluded.learned_at""",
                (account, api_key_id, iso(now or utcnow())),
            )

    async def bind_account(self, account: str, fingerprint: str, now: datetime | None = None) -> str | None:
        """Record that `account` (a configured place: "primary", "extra-1"...) now uses the key of `fingerprint`.

        Returns the fingerprint it had before (None the first time). The first time, rows written when accounts
        were named by their key's fingerprint are renamed to `account`. When the key changed (rotated), what
        belonged to the old key alone is forgotten: the api_key_id its tasks carried in the task list (the
        new key's is learned again) and its temporary uploads. Jobs keep their account, so their tasks are
        polled, and their videos fetched, with the new key.
        """
        async with self._db.transaction() as db:
            row = await db.fetch_one("SELECT fingerprint FROM account_keys WHERE account = ?", (account,))
            previous = None if row is None else str(row[0])
            if previous == fingerprint:
                return previous
            if previous is None:
                renamed = (account, fingerprint)
                await db.execute("UPDATE jobs SET account = ? WHERE account = ?", renamed)
                await db.execute("UPDATE provider_keys SET account = ? WHERE account = ?", renamed)
                await db.execute("UPDATE uploads SET account = ? WHERE account = ?", renamed)
            else:
                await db.execute("DELETE FROM provider_keys WHERE account = ?", (account,))
                await db.execute("DELETE FROM uploads WHERE account = ?", (account,))
            await db.execute(
                """INSERT INTO account_keys (account, fingerprint, bound_at) VALUES (?, ?, ?)
                   ON CONFLICT (account) DO UPDATE SET fingerprint = excluded.fingerprint,
                       bound_at = excluded.bound_at""",
                (account, fingerprint, iso(now or utcnow())),
            )
        return previous

    # --- the lease's fence (a transition checks it in its own transaction) ---------------------------
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
