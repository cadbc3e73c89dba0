"""A spend report as data: what the chart draws and the CSV lists, folded from the store's aggregate rows."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from bot.jobs.reports.store import SpendRow

OUTCOMES = ("delivered", "failed", "canceled", "in_progress")  # SpendRow's fields of the same names
CSV_COLUMNS = ("day", "guild_id", "model", "spent_cny", "reserved_cny", *OUTCOMES)


def days_ending(last_day: str, count: int) -> tuple[str, ...]:
    """`count` budget days ending with `last_day` (YYYY-MM-DD), oldest first."""
    end = date.fromisoformat(last_day)
    return tuple((end - timedelta(days=back)).isoformat() for back in range(count - 1, -1, -1))


def cny(milli: int) -> str:
    """Milli-CNY as an exact decimal string (spreadsheets read it as a number)."""
    sign = "-" if milli < 0 else ""
    whole, part = divmod(abs(milli), 1000)
    return f"{sign}{whole}.{part:03d}"


@dataclass(frozen=True, slots=True)
class SpendReport:
    """Spend per day and model against the budgets, and jobs per day by outcome, over consecutive budget days."""

    guild_id: int | None  # None: every guild together (the owners' report)
    days: tuple[str, ...]  # oldest first
    spent: dict[tuple[str, str], int]  # (day, model) -> milli-CNY settled
    reserved: dict[str, int]  # day -> milli-CNY reserved by jobs still in flight
    outcomes: dict[tuple[str, str], int]  # (day, outcome) -> jobs
    daily_budget: int | None = None  # milli-CNY; None in the all-guild report (budgets are per guild)
    monthly_budget: int | None = None
    top_guilds: tuple[tuple[int, int], ...] = ()  # (guild id, milli-CNY settled), biggest first (owners)
    csv_rows: Sequence[SpendRow] = field(default_factory=list)

    @classmethod
    def fold(
        cls,
        guild_id: int | None,
        days: tuple[str, ...],
        rows: Iterable[SpendRow],
        *,
        daily_budget: int | None = None,
        monthly_budget: int | None = None,
        top_guilds: Sequence[tuple[int, int]] = (),
        csv_rows: Sequence[SpendRow] | None = None,
    ) -> SpendReport:
        """The report from the store's (day, model) groups; `csv_rows` (the owners' per-guild groups) replace them
        in the CSV."""
        spent: dict[tuple[str, str], int] = defaultdict(int)
        reserved: dict[str, int] = defaultdict(int)
        outcomes: dict[tuple[str, str], int] = defaultdict(int)
        listed = list(rows)
        for row in listed:
            if row.spent:
                spent[row.day, row.model] += row.spent
            reserved[row.day] += row.reserved
            for outcome in OUTCOMES:
                outcomes[row.day, outcome] += getattr(row, outcome)
        return cls(
            guild_id, days, dict(spent), dict(reserved), dict(outcomes), daily_budget, monthly_budget,
            tuple(top_guilds), listed if csv_rows is None else csv_rows,
        )  # fmt: skip

    @property
    def models(self) -> tuple[str, ...]:
        """The models that were charged, biggest total first (the chart's stacking and legend order)."""
        totals: dict[str, int] = defaultdict(int)
        for (_, model), amount in self.spent.items():
            totals[model] += amount
        return tuple(sorted(totals, key=lambda m: (-totals[m], m)))

    def day_total(self, day: str) -> int:
        """Milli-CNY settled on `day`, every model."""
        return sum(amount for (d, _), amount in self.spent.items() if d == day)

    @property
    def total(self) -> int:
        """Milli-CNY settled over the whole range."""
        return sum(self.spent.values())

    def month_to_date(self) -> list[int]:
        """For each day, what its month had spent by the end of it (restarts at each month's first day)."""
        running, month, out = 0, "", []
        for day in self.days:
            if day[:7] != month:
                running, month = 0, day[:7]
            running += self.day_total(day)
            out.append(running)
        return out

    def csv(self) -> str:
        """One line per day, guild and model: CNY spent and reserved, jobs by outcome."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(
            (row.day, row.guild_id, row.model, cny(row.spent), cny(row.reserved),
             row.delivered, row.failed, row.canceled, row.in_progress)
            for row in sorted(self.csv_rows, key=lambda r: (r.day, r.guild_id, r.model))
        )  # fmt: skip
        return out.getvalue()
