"""`kf2v-bot demo`: start the world, play the afternoon with a live view, write the report, decide the exit code."""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from bot.logs import SecretRedactor, TextFormatter
from sandbox.demo.afternoon import Afternoon
from sandbox.demo.live import Console, display_width, fit, provider_time
from sandbox.demo.report import Check, Report, ReportBuilder, posted_videos, write_report
from sandbox.demo.transcript import write_transcript
from sandbox.demo.world import start_world, stop_world

log = logging.getLogger(__name__)

DEFAULT_TIME_SCALE = 60.0  # one provider minute per second: the afternoon takes about 45 s
DEFAULT_SEED = 7
WORST_TASK_S = 150.0 + 360.0  # the realistic emulator's longest wait plus longest run


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.errors += 1


class _ConsoleHandler(logging.Handler):
    """Log lines go above the live view instead of through it."""

    def __init__(self, console: Console, level: int) -> None:
        super().__init__(level)
        self.console = console

    def filter(self, record: logging.LogRecord) -> bool:
        # discord.py warns once that voice support is missing; the bot never uses voice.
        if record.name == "discord.client" and "voice will NOT be supported" in record.getMessage():
            return False
        return super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.line(self.format(record))
        except Exception:
            self.handleError(record)


@dataclass
class _Logging:
    handlers: list[logging.Handler]
    previous_level: int
    counter: _Counter

    def restore(self) -> None:
        root = logging.getLogger()
        for handler in self.handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(self.previous_level)


def _setup_logging(path: Path, console: Console, verbose: bool) -> _Logging:
    """Everything at INFO into OUTPUT/demo.log; the console shows warnings and errors only (INFO with -v)."""
    root = logging.getLogger()
    previous = root.level
    file_handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    console_handler = _ConsoleHandler(console, logging.INFO if verbose else logging.WARNING)
    for output in (file_handler, console_handler):
        output.setFormatter(TextFormatter())
        output.addFilter(SecretRedactor())
    counter = _Counter()
    handlers: list[logging.Handler] = [file_handler, console_handler, counter]
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    return _Logging(handlers, previous, counter)


def play_timeout(scale: float) -> float:
    """Generous: the worst case of the 13 default-model tasks (requests, story segments, regenerate, remix) on
    two slots, plus start-up and delivery."""
    return 30.0 + 7 * WORST_TASK_S / scale


async def run_demo(
    time_scale: float | None = None,
    output: str | Path = "demo-output",
    *,
    verbose: bool = False,
    seed: int = DEFAULT_SEED,
    stream: TextIO | None = None,
    tty: bool | None = None,
) -> int:
    """Run the offline demo; 0 when everything the script expects happened, 1 otherwise (2: bad arguments)."""
    scale = DEFAULT_TIME_SCALE if time_scale is None else float(time_scale)
    if not (math.isfinite(scale) and scale > 0):
        print("kf2v-bot demo: --time-scale must be a positive number (e.g. 60).", file=sys.stderr)
        return 2
    out = Path(output)
    try:
        await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    except OSError as exc:
        print(f"kf2v-bot demo: cannot use {out} for the output: {exc.strerror or exc}.", file=sys.stderr)
        return 2
    console = Console(stream, tty=tty)
    logging_state = _setup_logging(out / "demo.log", console, verbose)
    try:
        return await _run(scale, out, console, seed, logging_state.counter)
    except Exception as exc:
        log.exception("the demo crashed")
        console.line(f"kf2v-bot demo: crashed ({type(exc).__name__}: {exc}); details in {out / 'demo.log'}")
        return 1
    finally:
        logging_state.restore()


async def _run(scale: float, out: Path, console: Console, seed: int, counter: _Counter) -> int:
    started_wall = datetime.now(UTC)
    started = time.monotonic()
    console.line(
        f"kf2v-bot demo: emulated Discord + emulated DashScope + the real bot, offline. Provider clock x{scale:g}: "
        f"1 s here ≈ {provider_time(1, scale)} there."
    )
    with tempfile.TemporaryDirectory(prefix=".data-", dir=out) as data_dir:
        world = await start_world(Path(data_dir), scale, seed)
        try:
            console.line(f"Discord emulator {world.discord.base_url} · DashScope emulator {world.dashscope.base_url}")
            afternoon = Afternoon(world, scale, console)
            console.start_live(afternoon.snapshot)
            try:
                await afternoon.play(play_timeout(scale))
            finally:
                await console.stop_live(afternoon.snapshot)
            report = await ReportBuilder(afternoon, out, time.monotonic() - started, started_wall).build()
        finally:
            await stop_world(world)
    # What the members saw, from what the (now stopped) Discord emulator recorded: nothing changes it any more.
    transcript = await asyncio.to_thread(write_transcript, world.discord, out, posted_videos(report))
    report.transcript = str(transcript.index)
    errors = counter.errors
    report.checks.append(
        Check("no errors logged", errors == 0, f"{errors} error line(s) in demo.log" if errors else "none")
    )
    report.passed = all(check.ok for check in report.checks)
    report.wall_s = round(time.monotonic() - started, 1)
    md, js = write_report(report, out)
    console.line()
    for line in render_text(report):
        console.line(line)
    console.line()
    console.line(f"Report: {md} and {js}; videos: {report.videos_dir}/; log: {out / 'demo.log'}")
    console.line(f"What the members saw, thread by thread: {transcript.index}")
    if report.passed:
        console.line(f"PASS: everything the script expected happened ({report.wall_s:.0f} s).")
        return 0
    console.line(f"FAIL: missing or wrong (details in {out / 'demo.log'}):")
    for check in report.checks:
        if not check.ok:
            console.line(f"  - {check.name}: {check.detail}")
    return 1


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(display_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [cell + " " * (widths[i] - display_width(cell)) for i, cell in enumerate(row)]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def render_text(report: Report) -> list[str]:
    """The report for a terminal: aligned columns instead of markdown tables."""
    scale = report.time_scale

    def dur(seconds: float | None) -> str:
        return "—" if seconds is None else f"{seconds:4.1f}s ({provider_time(seconds, scale)})"

    lines = [f"Jobs (wait = accepted → submitted; run = submitted → finished; brackets: at provider speed x{scale:g})"]
    rows = [["job", "guild", "user", "what", "tier", "wait", "run", "outcome", "cost"]]
    for job in report.jobs:
        rows.append(
            [
                f"#{job.job_id}" if job.job_id is not None else "—",
                job.guild,
                job.user,
                fit(job.what, 34),
                job.resolution,
                dur(job.wait_s),
                dur(job.run_s),
                job.outcome,
                job.cost,
            ]
        )
    lines += _table(rows)
    s = report.slots
    lines += [
        "",
        f"Provider slots ({s['model']}, {s['capacity']} at a time): {s['tasks']} tasks, utilisation "
        f"{s['utilisation'] * 100:.0f}% over {s['busy_s']:.1f}s ({s['busy_provider_time']}); peak "
        f"{s['peak_in_flight']} in flight; {len(s['violations'])} limit violations",
        *("  " + row for row in s["timeline"]),
        "  (░ waiting at the provider, █ running, · free)",
        "",
        "Spend per guild today:",
    ]
    rows = [["guild", "daily budget", "spent", "left", "videos", "reserved / settled / released"]]
    for g in report.spend:
        budget = f"¥{g['daily_budget']}" + (" (owner)" if g["budget_set_by_owner"] else "")
        rows.append(
            [
                g["guild"],
                budget,
                f"¥{g['spent_today']}",
                f"¥{g['left_today']}",
                str(g["videos_charged"]),
                f"¥{g['ledger_reserved']} / ¥{g['ledger_settled']} / ¥{g['ledger_released']}",
            ]
        )
    lines += _table(rows)
    for story in report.stories:
        lines += [
            "",
            f"Story #{story.story_id} ({story.guild}, {story.user}): {story.segments} segments "
            f"({', '.join(f'#{j}' for j in story.segment_jobs)}), {story.state}, {story.cost}",
            f"  joined video {story.video}: {story.frames} frames (expected {story.expected_frames}), "
            f"{story.video_s} s; seams at frames {story.seams}"
            + (", keyframes where they belong" if story.keyframes_at_seams else ", keyframes NOT at the seams"),
        ]
    lines += ["", "What users were told:"]
    for item in report.seen:
        lines.append(f"  {item.who} ({item.kind}, {item.where}): {item.text}")
    lines += ["", "Checks:"]
    for check in report.checks:
        lines.append(f"  [{'ok' if check.ok else '!!'}] {check.name}: {check.detail}")
    return lines
