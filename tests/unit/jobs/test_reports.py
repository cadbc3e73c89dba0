"""Spend reports (issue 19) on both engines: the store's aggregates add up to the jobs and the ledger, per guild
against its budgets and for every guild with the top spenders; the CSV carries the same figures; the PNG is an
opaque picture whose colours hold their contrast on its background (so it reads in Discord's dark and light
themes) and shows bars only where money was spent."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from PIL import Image

from bot.catalog import load_catalog
from bot.jobs.db import Database
from bot.jobs.models import Job, JobRequest, JobState, NewJob
from bot.jobs.quota import BudgetService, Defaults
from bot.jobs.reports.chart import (
    BACKGROUND,
    MODEL_COLOURS,
    MONTHLY_LINE,
    OUTCOME_COLOURS,
    RUNNING_TOTAL,
    TEXT,
    TOP_GUILD,
    ChartText,
    cjk_font_path,
    render_png,
)
from bot.jobs.reports.model import OUTCOMES, SpendReport, days_ending
from bot.jobs.reports.service import ReportService
from bot.jobs.reports.store import ReportStore
from bot.jobs.store import JobStore
from tests.support.postgres import OpenDatabase

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
YESTERDAY = NOW - timedelta(days=1)
FLASH, PLUS = "wan2.2-kf2v-flash", "wanx2.1-kf2v-plus"
TEXT_EN = ChartText(
    title="Server 1 · last 30 days", spend="Spend per day (CNY), by model", month="Spent so far each month (CNY)",
    outcomes="Jobs per day", daily_budget="daily budget 5.00", monthly_budget="monthly budget 50.00",
    reserved="reserved (in progress)", outcome_names={o: o for o in OUTCOMES}, top_guilds="Top servers",
    no_spend="Nothing was spent",
)  # fmt: skip


@pytest.fixture
async def database(open_database_of_engine: OpenDatabase) -> Database:
    return await open_database_of_engine()


def luminance(rgb: tuple[int, int, int]) -> float:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


async def job(budget: BudgetService, store: JobStore, guild: int, model: str, when: datetime, end: str) -> Job:
    request = JobRequest(model=model, resolution="720P", prompt="a report")
    new = NewJob(
        guild_id=guild,
        channel_id=5,
        user_id=7,
        locale="en-US",
        request=request,
        first_frame="ab/ab.png",
        last_frame="cd/cd.png",
    )
    admitted = await budget.admit(new, now=when)
    if end == "queued":
        return admitted
    await store.transition(admitted.id, JobState.SUBMITTING, account="acct")
    if end == "failed":
        return await store.transition(admitted.id, JobState.FAILED, release=True)
    await store.transition(admitted.id, JobState.PENDING, task_id=f"t{admitted.id}")
    await store.transition(admitted.id, JobState.SUCCEEDED, settle=admitted.cost_reserved)
    return await store.transition(admitted.id, JobState.DELIVERED)


async def test_reports_add_up_to_the_jobs_per_guild_and_for_every_guild(database: Database) -> None:
    store = JobStore(database)
    budget = BudgetService(store, load_catalog(), Defaults(5_000, 50_000, 100, 100), ZoneInfo("UTC"), region="beijing")
    await budget.set_budgets(2, daily=8_000, monthly=None)
    made = [
        await job(budget, store, 1, FLASH, YESTERDAY, "delivered"),
        await job(budget, store, 1, PLUS, YESTERDAY, "delivered"),
        await job(budget, store, 1, FLASH, NOW, "delivered"),
        await job(budget, store, 1, FLASH, NOW, "failed"),
        await job(budget, store, 1, PLUS, NOW, "queued"),
        await job(budget, store, 2, PLUS, NOW, "delivered"),
        await job(budget, store, 2, PLUS, NOW, "delivered"),
    ]
    flash, plus = made[0].cost_reserved, made[1].cost_reserved
    reports = ReportService(ReportStore(database), budget)
    today, yesterday = NOW.date().isoformat(), YESTERDAY.date().isoformat()

    one = await reports.build(1, now=NOW)
    assert one.days == days_ending(today, 30) and one.days[-2] == yesterday
    assert one.spent == {(yesterday, FLASH): flash, (yesterday, PLUS): plus, (today, FLASH): flash}
    assert one.reserved.get(today) == plus and not one.reserved.get(yesterday)
    assert [one.outcomes.get((today, o), 0) for o in OUTCOMES] == [1, 1, 0, 1]
    assert (one.daily_budget, one.monthly_budget) == (5_000, 50_000)
    assert one.month_to_date()[-2:] == [flash + plus, 2 * flash + plus]
    assert (await reports.build(2, now=NOW)).daily_budget == 8_000

    every = await reports.build(None, now=NOW)
    assert every.total == sum(e.amount for e in await store.ledger() if e.kind == "settle") == 2 * flash + 3 * plus
    assert every.top_guilds == ((2, 2 * plus), (1, 2 * flash + plus))
    assert every.daily_budget is None  # budgets are per guild
    lines = list(csv.DictReader(io.StringIO(every.csv())))
    assert {(r["day"], r["guild_id"], r["model"]) for r in lines} == {
        (yesterday, "1", FLASH), (yesterday, "1", PLUS), (today, "1", FLASH), (today, "1", PLUS), (today, "2", PLUS),
    }  # fmt: skip
    spent_cny = sum(float(r["spent_cny"]) for r in lines)
    assert spent_cny == pytest.approx(every.total / 1000)
    assert sum(int(r["failed"]) for r in lines) == 1 and sum(int(r["in_progress"]) for r in lines) == 1
    guild_two = [r for r in lines if r["guild_id"] == "2"]
    assert guild_two[0]["delivered"] == "2" and float(guild_two[0]["spent_cny"]) == 2 * plus / 1000

    png = Image.open(io.BytesIO(render_png(every, TEXT_EN)))
    assert png.size == (1500, 900)  # the owners' column of top guilds


def colours_in(png: bytes) -> set[tuple[int, int, int]]:
    image = Image.open(io.BytesIO(png))
    return {tuple(c) for _, c in image.getcolors(maxcolors=1 << 20) or [] if isinstance(c, tuple)}  # type: ignore[misc]


def report_with(spent: int) -> SpendReport:
    days = days_ending("2026-12-06", 30)
    spent_map = {(days[-1], FLASH): spent} if spent else {}
    return SpendReport(1, days, spent_map, {}, {(days[-1], "delivered"): 1}, 5_000, 50_000)


def test_the_chart_is_opaque_and_its_colours_hold_their_contrast() -> None:
    png = render_png(report_with(3_000), TEXT_EN)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGB" and image.size == (1200, 900)  # no alpha: one look
    assert image.getpixel((2, 2)) == BACKGROUND
    assert contrast(TEXT, BACKGROUND) >= 7  # WCAG AAA for text
    for colour in (*MODEL_COLOURS, *OUTCOME_COLOURS.values(), MONTHLY_LINE, RUNNING_TOTAL, TOP_GUILD):
        assert contrast(colour, BACKGROUND) >= 3, colour  # WCAG's non-text contrast
    seen = colours_in(png)
    assert MODEL_COLOURS[0] in seen and OUTCOME_COLOURS["delivered"] in seen


def test_no_spend_draws_no_bars() -> None:
    seen = colours_in(render_png(report_with(0), TEXT_EN))
    assert MODEL_COLOURS[0] not in seen and MODEL_COLOURS[1] not in seen
    assert OUTCOME_COLOURS["delivered"] in seen


async def test_chinese_labels_fall_back_to_english_without_a_cjk_font() -> None:
    if cjk_font_path() is not None:
        pytest.skip("a CJK font is installed here: the Chinese labels are drawn with it")
    report = report_with(3_000)
    chinese = ChartText(title="服务器 1", spend="每日花费", month="本月累计", outcomes="每日任务数",
                        daily_budget="每日预算", monthly_budget="每月预算", reserved="已预留")  # fmt: skip
    reports = ReportService(None, None)  # type: ignore[arg-type]  # render needs neither store nor budget
    drawn = await reports.render(report, chinese, TEXT_EN)
    assert drawn.png == render_png(report, TEXT_EN)  # no boxes where the glyphs would be
