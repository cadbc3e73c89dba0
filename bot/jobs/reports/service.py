"""ReportService: a spend report from the store's aggregates, rendered to PNG and CSV in a worker thread."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from bot.jobs.quota import BudgetService
from bot.jobs.reports.chart import ChartText, cjk_font_path, needs_cjk, render_png
from bot.jobs.reports.model import SpendReport, days_ending
from bot.jobs.reports.store import ReportStore

REPORT_DAYS = 30
TOP_GUILDS = 10


@dataclass(frozen=True, slots=True)
class RenderedReport:
    """The chart and the CSV of one report, ready to attach."""

    report: SpendReport
    png: bytes
    csv: bytes


class ReportService:
    """Builds the managers' (one guild, with its budgets) and the owners' (every guild) spend reports."""

    def __init__(self, store: ReportStore, budget: BudgetService, *, days: int = REPORT_DAYS) -> None:
        self.store = store
        self.budget = budget
        self.days = days

    async def build(self, guild_id: int | None, *, now: datetime | None = None) -> SpendReport:
        """The last `days` budget days up to today: one guild against its budgets, or (None) every guild."""
        days = days_ending(self.budget.periods(now).day, self.days)
        first, last = days[0], days[-1]
        if guild_id is None:
            # One aggregate query (day, guild, model): the chart's per-day figures and the top guilds are folded
            # from it; three queries cost more than the fold (bench/report_chart.py).
            per_guild = await self.store.spend_rows_by_guild(first, last)
            by_guild: dict[int, int] = defaultdict(int)
            for row in per_guild:
                by_guild[row.guild_id] += row.spent
            top = sorted(((g, spent) for g, spent in by_guild.items() if spent), key=lambda gs: (-gs[1], gs[0]))
            return SpendReport.fold(None, days, per_guild, top_guilds=top[:TOP_GUILDS])
        policy = await self.budget.policy(guild_id)
        rows = await self.store.spend_rows(guild_id, first, last)
        return SpendReport.fold(
            guild_id, days, rows, daily_budget=policy.daily_budget, monthly_budget=policy.monthly_budget
        )

    async def render(self, report: SpendReport, text: ChartText, fallback: ChartText) -> RenderedReport:
        """PNG and CSV, drawn in a worker thread (the event loop goes on serving). `text` needs a CJK font when it
        is Chinese; without one installed the chart uses `fallback` (English) rather than drawing empty boxes."""
        font = cjk_font_path() if needs_cjk(text) else None
        words = text if font is not None or not needs_cjk(text) else fallback

        def draw() -> RenderedReport:
            return RenderedReport(report, render_png(report, words, font_path=font), report.csv().encode("utf-8"))

        return await asyncio.to_thread(draw)


__all__ = ["REPORT_DAYS", "RenderedReport", "ReportService"]
