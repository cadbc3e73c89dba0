"""Money: the ledger (every reservation, settlement and release, append-only) and what a guild has spent and
reserved against its budgets.

Owns the table ledger. The sums are read from the jobs' own money columns (cost_reserved, cost_settled,
charge_state, period_day, period_month: the job row and its ledger row are written in one transaction), and
the admission's one statement joins the guild's row of guild_policies (rules.py's) to them. `_ledger` and
`_policy_and_usage` take the caller's transaction: a job's admission and its reservation, a transition and its
settlement, commit together.
"""

from __future__ import annotations

from datetime import datetime

from bot.jobs.db import Database, Transaction
from bot.jobs.models import GuildPolicy, GuildUsage, LedgerEntry
from bot.jobs.store.common import StoreBase, iso, policy_from, required_dt

TABLES = frozenset({"ledger"})
USES = frozenset({"jobs", "guild_policies"})


class MoneyStore(StoreBase):
    """The ledger, the guilds' usage and spend."""

    async def guild_usage(self, guild_id: int, user_id: int, period_day: str, period_month: str) -> GuildUsage:
        """The guild's settled and reserved milli-CNY in these periods, and the member's counts."""
        return await self._usage(self._db, guild_id, user_id, period_day, period_month)

    async def ledger(self, guild_id: int | None = None) -> list[LedgerEntry]:
        """Ledger entries in order (one guild's, or all), for audits and tests."""
        if guild_id is None:
            rows = await self._db.fetch_all("SELECT * FROM ledger ORDER BY id")
        else:
            rows = await self._db.fetch_all("SELECT * FROM ledger WHERE guild_id = ? ORDER BY id", (guild_id,))
        return [
            LedgerEntry(r["id"], r["job_id"], r["guild_id"], r["kind"], r["amount"], required_dt(r["at"])) for r in rows
        ]

    async def top_spenders(self, guild_id: int, period_month: str, limit: int = 5) -> list[tuple[int, int, int]]:
        """(user_id, videos, milli-CNY counted) this month, biggest first; erased members (user 0) are left out."""
        rows = await self._db.fetch_all(
            """SELECT user_id, COUNT(*),
                      SUM(CASE charge_state WHEN 'settled' THEN cost_settled
                                            WHEN 'reserved' THEN cost_reserved ELSE 0 END) AS used
               FROM jobs WHERE guild_id = ? AND period_month = ? AND charge_state != 'released'
                 AND user_id != 0
               GROUP BY user_id ORDER BY used DESC LIMIT ?""",
            (guild_id, period_month, limit),
        )
        return [(int(r[0]), int(r[1]), int(r[2])) for r in rows]

    async def spend_by_guild(self) -> dict[int, int]:
        """Settled milli-CNY per guild, all time."""
        rows = await self._db.fetch_all(
            "SELECT guild_id, SUM(cost_settled) FROM jobs WHERE charge_state = 'settled' GROUP BY guild_id"
        )
        return {int(r[0]): int(r[1]) for r in rows}

    async def policy_and_usage(
        self, guild_id: int, user_id: int, period_day: str, period_month: str
    ) -> tuple[GuildPolicy, GuildUsage]:
        """Read-only, outside any transaction: for a cheap early refusal, never for the decision itself."""
        return await self._policy_and_usage(self._db, guild_id, user_id, period_day, period_month)

    # --- in a caller's transaction (the admission, a settlement) -------------------------------------
    @staticmethod
    async def _ledger(db: Transaction, job_id: int, guild_id: int, kind: str, amount: int, now: datetime) -> None:
        await db.execute(
            "INSERT INTO ledger (job_id, guild_id, kind, amount, at) VALUES (?, ?, ?, ?, ?)",
            (job_id, guild_id, kind, amount, iso(now)),
        )

    @staticmethod
    async def _usage(
        db: Transaction | Database, guild_id: int, user_id: int, period_day: str, period_month: str
    ) -> GuildUsage:
        _, usage = await MoneyStore._policy_and_usage(db, guild_id, user_id, period_day, period_month)
        return usage

    @staticmethod
    async def _policy_and_usage(
        db: Transaction | Database, guild_id: int, user_id: int, period_day: str, period_month: str
    ) -> tuple[GuildPolicy, GuildUsage]:
        """The guild's policy and usage in one statement: one trip to the database thread instead of four
        (admission runs this inside its transaction, under the write lock)."""
        params = (guild_id, period_day, guild_id, period_month, period_day, guild_id, user_id, guild_id)
        row = await db.fetch_one(_POLICY_AND_USAGE_SQL, params)
        assert row is not None
        usage = GuildUsage(
            spent_day=int(row["spent_day"]),
            reserved_day=int(row["reserved_day"]),
            spent_month=int(row["spent_month"]),
            reserved_month=int(row["reserved_month"]),
            member_videos_today=int(row["member_today"]),
            member_active_jobs=int(row["member_active"]),
        )
        return policy_from(guild_id, row if row["policy_guild"] is not None else None), usage


# A guild's spend today and this month, a member's videos today and unfinished jobs (three aggregates, each
# over its own index: jobs_guild_day, jobs_guild_month, jobs_user) and the guild's policy row if any. A story
# with segments unfinished is one unfinished request, however many segments it has (its member's queue limit).
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
                              AND story_id IS NULL THEN 1 ELSE 0 END), 0)
            + COUNT(DISTINCT CASE WHEN state NOT IN ('delivered', 'failed', 'canceled', 'succeeded')
                                  THEN story_id END) AS active
     FROM jobs WHERE guild_id = ? AND user_id = ?) AS u
    LEFT JOIN guild_policies AS p ON p.guild_id = ?"""
