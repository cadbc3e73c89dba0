"""report_chart: the spend report (issue 19) for 30 days of 1,000 guilds: how long the database takes to aggregate
it and Pillow to draw it, on a SQLite file.

Setup: `guilds` guilds x 30 budget days x `per_day` jobs each (full: 1,000 x 30 x 4 = 120,000 jobs; three models,
mostly delivered and settled, some failed and released, today's few still reserved), inserted straight into the
jobs table (fixture rows, not admissions), then ANALYZE. Measured `repeat` times each, median reported:

* guild_build_ms / all_build_ms: ReportService.build for one guild (its budgets and its rows) and for every guild
  together (the chart's groups, the per-guild CSV groups and the top guilds): the SQL aggregation and the fold.
* guild_render_ms / all_render_ms: drawing the PNG from the built report (in the bot: a worker thread); the
  target is 200 ms. guild_csv_ms / all_csv_ms: writing its CSV (same thread).
* png_kb, all_csv_kb: the attachments' sizes.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench._common import note, r3
from bot.catalog import load_catalog
from bot.jobs.quota import BudgetService, Defaults
from bot.jobs.reports.chart import ChartText, render_png
from bot.jobs.reports.model import OUTCOMES, days_ending
from bot.jobs.reports.service import ReportService
from bot.jobs.reports.store import ReportStore
from bot.jobs.store import JobStore

SIZES = {"tiny": (20, 2, 3), "full": (1000, 4, 15)}  # guilds, jobs per guild per day, repeats
MODELS = (("wan2.2-kf2v-flash", 1000), ("wanx2.1-kf2v-plus", 3500), ("wan2.7-i2v", 5000))
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
TEXT = ChartText(
    title="bench", spend="Spend per day (CNY), by model", month="Spent so far each month (CNY)",
    outcomes="Jobs per day", daily_budget="daily budget 10.00", monthly_budget="monthly budget 100.00",
    reserved="reserved (in progress)", outcome_names={o: o for o in OUTCOMES}, top_guilds="Top servers",
)  # fmt: skip

_INSERT = """INSERT INTO jobs (guild_id, channel_id, user_id, model, resolution, prompt, first_frame, state, queue_seq,
                cost_reserved, cost_settled, charge_state, period_day, period_month, created_at, updated_at)
             VALUES (?, 1, ?, ?, '720P', 'bench', 'ab/ab.png', ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


def fixture_rows(guilds: int, per_day: int, rng: random.Random) -> list[tuple[Any, ...]]:
    days = days_ending("2026-12-06", 30)
    rows: list[tuple[Any, ...]] = []
    stamp = NOW.isoformat()
    for day in days:
        for guild in range(1, guilds + 1):
            for _ in range(per_day):
                model, price = MODELS[rng.randrange(3)]
                roll = rng.random()
                if day == days[-1] and roll < 0.2:
                    state, charge, settled = "running", "reserved", 0
                elif roll < 0.85:
                    state, charge, settled = "delivered", "settled", price
                elif roll < 0.95:
                    state, charge, settled = "failed", "released", 0
                else:
                    state, charge, settled = "canceled", "released", 0
                rows.append((guild, 1000 + guild, model, state, len(rows) + 1, price, settled, charge, day, day[:7],
                             stamp, stamp))  # fmt: skip
    return rows


def median_ms(samples: list[float]) -> float:
    return r3(statistics.median(samples) * 1000)


async def measure(size: str, seed: int = 19) -> dict[str, Any]:
    guilds, per_day, repeat = SIZES[size]
    with tempfile.TemporaryDirectory(prefix="kf2v-bench-report-") as tmp:
        store = await JobStore.open(Path(tmp) / "kf2v.sqlite3")
        try:
            rows = fixture_rows(guilds, per_day, random.Random(seed))
            note(f"inserting {len(rows)} jobs")
            await store.database.execute_many(_INSERT, rows)
            await store.database.execute("ANALYZE")
            budget = BudgetService(store, load_catalog(), Defaults(10_000, 100_000, 20, 3), ZoneInfo("UTC"),
                                   region="beijing")  # fmt: skip
            reports = ReportService(ReportStore(store.database), budget)
            figures: dict[str, Any] = {"bench": "report_chart", "size": size, "guilds": guilds, "jobs": len(rows)}
            for name, guild in (("guild", guilds // 2 or 1), ("all", None)):
                builds, renders, writes = [], [], []
                report = await reports.build(guild, now=NOW)
                png = render_png(report, TEXT)  # warm: fonts loaded, code paths run once
                for _ in range(repeat):
                    started = time.perf_counter()
                    report = await reports.build(guild, now=NOW)
                    builds.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    png = render_png(report, TEXT)
                    renders.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    csv = report.csv().encode()
                    writes.append(time.perf_counter() - started)
                figures[f"{name}_build_ms"] = median_ms(builds)
                figures[f"{name}_render_ms"] = median_ms(renders)
                figures[f"{name}_csv_ms"] = median_ms(writes)
                figures[f"{name}_png_kb"] = r3(len(png) / 1024)
                figures[f"{name}_csv_kb"] = r3(len(csv) / 1024)
                figures[f"{name}_spent_cny"] = report.total / 1000
            figures["settled_cny"] = sum(r[6] for r in rows) / 1000  # what the all-guild report must add up to
            return figures
        finally:
            await store.close()
