"""The spend chart and CSV as Discord attachments, with the chart's words in the reader's language."""

from __future__ import annotations

import io

import discord

from bot.i18n import t
from bot.jobs.reports.chart import ChartText
from bot.jobs.reports.model import OUTCOMES, SpendReport, cny
from bot.jobs.reports.service import ReportService


def chart_text(report: SpendReport, locale: str) -> ChartText:
    """Every label of the chart from bot.i18n (amounts in CNY: the chart's default font has no "¥")."""
    days, total = len(report.days), cny(report.total)[:-1]  # two decimals
    if report.guild_id is None:
        title = t(locale, "chart.title_all", days=days, total=total)
    else:
        title = t(locale, "chart.title_guild", guild=report.guild_id, days=days, total=total)

    def budget(key: str, milli: int | None) -> str:
        return t(locale, key, amount=cny(milli or 0)[:-1])

    return ChartText(
        title=title,
        spend=t(locale, "chart.spend"),
        month=t(locale, "chart.month"),
        outcomes=t(locale, "chart.outcomes"),
        daily_budget=budget("chart.daily_budget", report.daily_budget),
        monthly_budget=budget("chart.monthly_budget", report.monthly_budget),
        reserved=t(locale, "chart.reserved"),
        outcome_names={outcome: t(locale, f"chart.{outcome}") for outcome in OUTCOMES},
        top_guilds=t(locale, "chart.top_guilds", days=days),
        no_spend=t(locale, "chart.no_spend", days=days),
    )


async def report_files(reports: ReportService, guild_id: int | None, locale: str) -> list[discord.File]:
    """The report of one guild (or every guild: None) as a PNG and a CSV attachment."""
    report = await reports.build(guild_id)
    rendered = await reports.render(report, chart_text(report, locale), chart_text(report, "en-US"))
    stem = f"kf2v-spend-{'all' if guild_id is None else guild_id}-{report.days[-1]}"
    return [
        discord.File(io.BytesIO(rendered.png), filename=f"{stem}.png"),
        discord.File(io.BytesIO(rendered.csv), filename=f"{stem}.csv"),
    ]


__all__ = ["chart_text", "report_files"]
