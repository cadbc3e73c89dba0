"""The spend chart, drawn with Pillow (already a dependency; matplotlib would add ~120 MB with numpy and take
over a second to import: README "Spend reports" has the measurements).

One opaque PNG on a neutral dark grey (Discord's own dark surface), so it reads the same in the dark and the light
theme: light text, colours picked for contrast on that grey and from each other. Three panels over the same days:
spend per day stacked by model with what is still reserved on top and the daily budget as a dashed line; each
month's running total against the monthly budget; jobs per day by outcome. The owners' report adds the guilds
that spent most. No discord import, no I/O: bytes in, bytes out, run in a worker thread by the service.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bot.jobs.reports.model import OUTCOMES, SpendReport

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
RGB = tuple[int, int, int]

BACKGROUND: RGB = (0x2B, 0x2D, 0x31)  # Discord's dark surface: opaque, mid-dark, neutral
PANEL: RGB = (0x31, 0x33, 0x38)
GRID: RGB = (0x4E, 0x50, 0x58)
TEXT: RGB = (0xF2, 0xF3, 0xF5)
MUTED: RGB = (0xB5, 0xBA, 0xC1)
DAILY_LINE: RGB = (0xFF, 0xFF, 0xFF)
MONTHLY_LINE: RGB = (0xFE, 0xE7, 0x5C)
RESERVED: RGB = (0x80, 0x84, 0x8E)
RUNNING_TOTAL: RGB = (0xE3, 0xE5, 0xE8)  # the month's running total (light, apart from every model's colour)
TOP_GUILD: RGB = (0xC9, 0xCD, 0xFB)
# Models in order of spend; each readable on BACKGROUND (contrast >= 3:1) and distinct from its neighbours.
MODEL_COLOURS: tuple[RGB, ...] = (
    (0x5E, 0x9B, 0xFF),  # blue
    (0xF0, 0xB2, 0x32),  # amber
    (0xEB, 0x45, 0x9E),  # pink
    (0x3B, 0xD1, 0xC6),  # teal
    (0xB3, 0x8C, 0xFF),  # violet
    (0xFF, 0x8A, 0x4C),  # orange
)
OUTCOME_COLOURS: dict[str, RGB] = {
    "delivered": (0x3B, 0xC1, 0x6E),
    "failed": (0xF2, 0x5C, 0x5F),
    "canceled": (0x94, 0x9B, 0xA4),
    "in_progress": (0x00, 0xC8, 0xF8),
}
WIDTH, HEIGHT, SIDE = 1200, 900, 300  # SIDE: the owners' top-guilds column
# CJK-capable fonts looked for when the labels need them (Debian/Ubuntu packages fonts-noto-cjk, fonts-wqy-*).
CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)


@dataclass(frozen=True, slots=True)
class ChartText:
    """Every word on the chart, in the reader's language (the Discord layer builds it from bot.i18n)."""

    title: str
    spend: str  # panel titles
    month: str
    outcomes: str
    daily_budget: str  # legend entries
    monthly_budget: str
    reserved: str
    outcome_names: dict[str, str] = field(default_factory=dict)
    top_guilds: str = ""
    no_spend: str = ""
    currency: str = ""  # before amounts on the axes; the default font has no "¥", so titles say "CNY" instead


def cjk_font_path() -> Path | None:
    """The first CJK-capable font installed here, or None (then the caller uses English labels)."""
    return next((Path(p) for p in CJK_FONTS if Path(p).is_file()), None)


def needs_cjk(text: ChartText) -> bool:
    """Whether any label has a character outside Latin-1 and general punctuation (the default font has neither)."""
    words = [text.title, text.spend, text.month, text.outcomes, text.daily_budget, text.monthly_budget,
             text.reserved, text.top_guilds, text.no_spend, *text.outcome_names.values()]  # fmt: skip
    return any(ord(ch) > 0x2FFF for word in words for ch in word)


@lru_cache(maxsize=16)
def _font(size: int, path: str | None) -> Font:
    if path:
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def nice_ceiling(value: float) -> tuple[float, float]:
    """(axis top, tick step): 1, 2 or 5 times a power of ten, four or five ticks up to at least `value`."""
    if value <= 0:
        return 1.0, 0.25
    raw = value / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return step * math.ceil(value / step), step


def _money(milli: float, currency: str) -> str:
    cny = milli / 1000
    if cny >= 1000:
        return f"{currency}{cny:,.0f}"
    return f"{currency}{cny:.0f}" if cny == int(cny) else f"{currency}{cny:.2f}".rstrip("0").rstrip(".")


class _Canvas:
    def __init__(self, width: int, height: int, font_path: str | None) -> None:
        self.image = Image.new("RGB", (width, height), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.font_path = font_path

    def text(self, xy: tuple[float, float], text: str, size: int, fill: RGB = TEXT, anchor: str = "la") -> float:
        font = _font(size, self.font_path)
        self.draw.text(xy, text, font=font, fill=fill, anchor=anchor)
        return float(self.draw.textlength(text, font=font))

    def dashed(self, x0: float, x1: float, y: float, fill: RGB, width: int = 2, dash: int = 10) -> None:
        x = x0
        while x < x1:
            self.draw.line([(x, y), (min(x + dash, x1), y)], fill=fill, width=width)
            x += dash * 1.7

    def swatch(self, x: float, y: float, colour: RGB, label: str, *, line: bool = False) -> float:
        if line:
            self.dashed(x, x + 22, y + 8, colour, width=3, dash=7)
        else:
            self.draw.rectangle([x, y + 2, x + 14, y + 14], fill=colour)
        return x + (28 if line else 20) + self.text((x + (28 if line else 20), y), label, 14) + 18


@dataclass(frozen=True, slots=True)
class _Panel:
    left: float
    top: float
    right: float
    bottom: float
    ceiling: float
    step: float

    def y(self, value: float) -> float:
        return self.bottom - (self.bottom - self.top) * (value / self.ceiling)


def _panel(canvas: _Canvas, left: float, top: float, right: float, bottom: float, ceiling: float, title: str,
           label: Callable[[float], str]) -> _Panel:  # fmt: skip
    top_value, step = nice_ceiling(ceiling)
    panel = _Panel(left, top, right, bottom, top_value, step)
    canvas.draw.rectangle([left, top, right, bottom], fill=PANEL)
    canvas.text((left, top - 26), title, 17)
    ticks = round(top_value / step)
    for i in range(ticks + 1):
        value = i * step
        y = panel.y(value)
        canvas.draw.line([(left, y), (right, y)], fill=GRID, width=1)
        canvas.text((left - 8, y), label(value), 13, MUTED, anchor="rm")
    return panel


def render_png(report: SpendReport, text: ChartText, *, font_path: Path | None = None) -> bytes:
    """The report as a PNG (bytes). `font_path`: a font for labels the default font can't draw (CJK)."""
    owners = report.guild_id is None and bool(report.top_guilds)
    width = WIDTH + (SIDE if owners else 0)
    canvas = _Canvas(width, HEIGHT, str(font_path) if font_path else None)
    left, right = 90.0, WIDTH - 30.0
    days = report.days
    slot = (right - left) / max(1, len(days))
    bar = max(2.0, slot * 0.7)
    models = report.models
    colour = {model: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, model in enumerate(models)}
    money = lambda v: _money(v, text.currency)  # noqa: E731

    canvas.text((left, 18), text.title, 22)
    x = left
    for model in models:
        x = canvas.swatch(x, 52, colour[model], model)
    x = canvas.swatch(x, 52, RESERVED, text.reserved)
    if report.daily_budget is not None:
        x = canvas.swatch(x, 52, DAILY_LINE, text.daily_budget, line=True)
    if report.monthly_budget is not None:
        canvas.swatch(x, 52, MONTHLY_LINE, text.monthly_budget, line=True)

    # 1. Spend per day, stacked by model, reserved on top; the daily budget.
    tallest = max((report.day_total(d) + report.reserved.get(d, 0) for d in days), default=0)
    spend = _panel(canvas, left, 110, right, 420, max(tallest, report.daily_budget or 0) * 1.08, text.spend, money)
    for i, day in enumerate(days):
        x0 = left + i * slot + (slot - bar) / 2
        base = 0
        for model in reversed(models):  # the biggest model at the bottom
            amount = report.spent.get((day, model), 0)
            if amount:
                canvas.draw.rectangle([x0, spend.y(base + amount), x0 + bar, spend.y(base)], fill=colour[model])
                base += amount
        held = report.reserved.get(day, 0)
        if held:
            canvas.draw.rectangle([x0, spend.y(base + held), x0 + bar, spend.y(base)], outline=RESERVED, width=2)
    if report.daily_budget is not None:
        canvas.dashed(left, right, spend.y(report.daily_budget), DAILY_LINE)
    if not report.total and text.no_spend:
        canvas.text(((left + right) / 2, 265), text.no_spend, 18, MUTED, anchor="mm")

    # 2. Each month's running total against the monthly budget.
    running = report.month_to_date()
    month = _panel(canvas, left, 470, right, 640, max(max(running, default=0), report.monthly_budget or 0) * 1.08,
                   text.month, money)  # fmt: skip
    points: list[tuple[float, float]] = []
    for i, (day, value) in enumerate(zip(days, running, strict=True)):
        if points and day.endswith("-01"):  # a new month starts from zero: break the line
            canvas.draw.line(points, fill=RUNNING_TOTAL, width=3)
            points = []
        points.append((left + (i + 0.5) * slot, month.y(value)))
    if len(points) > 1:
        canvas.draw.line(points, fill=RUNNING_TOTAL, width=3)
    for px, py in points[-1:]:
        canvas.draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=RUNNING_TOTAL)
    if report.monthly_budget is not None:
        canvas.dashed(left, right, month.y(report.monthly_budget), MONTHLY_LINE)

    # 3. Jobs per day by outcome.
    counts = [sum(report.outcomes.get((d, o), 0) for o in OUTCOMES) for d in days]
    jobs = _panel(canvas, left, 690, right, 840, max(max(counts, default=0), 1) * 1.08, text.outcomes,
                  lambda v: f"{v:.0f}" if v == int(v) else "")  # fmt: skip
    legend_x = left + 30 + canvas.draw.textlength(text.outcomes, font=_font(17, canvas.font_path))
    for outcome in OUTCOMES:
        legend_x = canvas.swatch(legend_x, 665, OUTCOME_COLOURS[outcome], text.outcome_names.get(outcome, outcome))
    for i, day in enumerate(days):
        x0 = left + i * slot + (slot - bar) / 2
        base = 0
        for outcome in OUTCOMES:
            n = report.outcomes.get((day, outcome), 0)
            if n:
                canvas.draw.rectangle([x0, jobs.y(base + n), x0 + bar, jobs.y(base)], fill=OUTCOME_COLOURS[outcome])
                base += n

    # Day labels under the last panel: the day of the month, the month's name where one starts.
    every = 1 if slot >= 30 else 2 if slot >= 16 else 5
    for i, day in enumerate(days):
        cx = left + (i + 0.5) * slot
        if i % every == 0 or day.endswith("-01"):
            canvas.text((cx, 850), str(int(day[8:])), 13, MUTED, anchor="ma")
        if i == 0 or day.endswith("-01"):
            canvas.text((cx, 868), day[:7], 13, TEXT, anchor="ma")

    if owners:
        _top_guilds(canvas, report, text, WIDTH + 10, width - 30.0, money)
    out = io.BytesIO()
    canvas.image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def _top_guilds(canvas: _Canvas, report: SpendReport, text: ChartText, left: float, right: float,
                money: Callable[[float], str]) -> None:  # fmt: skip
    canvas.text((left, 84), text.top_guilds, 17)
    biggest = max((amount for _, amount in report.top_guilds), default=1) or 1
    for i, (guild, amount) in enumerate(report.top_guilds[:12]):
        y = 120 + i * 58
        canvas.text((left, y), str(guild), 14, MUTED)
        canvas.text((right, y), money(amount), 14, TEXT, anchor="ra")
        canvas.draw.rectangle([left, y + 22, left + (right - left) * amount / biggest, y + 38], fill=TOP_GUILD)


__all__ = ["ChartText", "cjk_font_path", "needs_cjk", "nice_ceiling", "render_png"]
