"""The report queries, on bot.jobs.db's Database (SQLite and PostgreSQL): aggregated by the database, never by
loading jobs. Days are the budget's days (`period_day`, YYYY-MM-DD in KF2V_TIMEZONE), as the budgets count them.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.jobs.db import Database, Row

TABLES: frozenset[str] = frozenset()  # owns no table: it only sums the jobs' money columns
USES = frozenset({"jobs"})


@dataclass(frozen=True, slots=True)
class SpendRow:
    """One (day, guild, model) group of jobs: charged, still reserved, and how many ended each way."""

    day: str
    guild_id: int
    model: str
    spent: int  # milli-CNY settled
    reserved: int  # milli-CNY still reserved (jobs in flight)
    delivered: int
    failed: int
    canceled: int
    in_progress: int  # every other state, a made video not yet posted included


# Money and outcomes of a group in one pass; the states are the store's (bot.jobs.models.JobState values).
_SUMS = """COALESCE(SUM(CASE WHEN charge_state = 'settled' THEN cost_settled ELSE 0 END), 0),
           COALESCE(SUM(CASE WHEN charge_state = 'reserved' THEN cost_reserved ELSE 0 END), 0),
           COALESCE(SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END), 0),
           COALESCE(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0),
           COALESCE(SUM(CASE WHEN state = 'canceled' THEN 1 ELSE 0 END), 0),
           COALESCE(SUM(CASE WHEN state NOT IN ('delivered', 'failed', 'canceled') THEN 1 ELSE 0 END), 0)"""


def _row(r: Row, guild_id: int, first: int) -> SpendRow:
    return SpendRow(str(r[0]), guild_id, str(r[first]), *(int(v) for v in tuple(r)[first + 1 : first + 7]))


class ReportStore:
    """Spend and outcomes per day and model, of one guild or of every guild by guild, over a range of budget days."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def spend_rows(self, guild_id: int, first_day: str, last_day: str) -> list[SpendRow]:
        """One guild's jobs grouped by day and model (over the jobs_guild_day index)."""
        rows = await self._db.fetch_all(
            f"""SELECT period_day, model, {_SUMS} FROM jobs
                WHERE guild_id = ? AND period_day >= ? AND period_day <= ? GROUP BY period_day, model""",  # noqa: S608
            (guild_id, first_day, last_day),
        )
        return [_row(r, guild_id, 1) for r in rows]

    async def spend_rows_by_guild(self, first_day: str, last_day: str) -> list[SpendRow]:
        """Every guild's jobs grouped by day, guild and model: the owners' report and CSV."""
        rows = await self._db.fetch_all(
            f"""SELECT period_day, guild_id, model, {_SUMS} FROM jobs
                WHERE period_day >= ? AND period_day <= ? GROUP BY period_day, guild_id, model""",  # noqa: S608
            (first_day, last_day),
        )
        return [_row(r, int(r[1]), 2) for r in rows]
