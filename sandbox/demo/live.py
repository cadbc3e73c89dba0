"""What the demo shows while it runs: the queue, the two provider slots and every job's state.

On a terminal the view is redrawn in place about twice a second, with the afternoon's events (and any
warnings) scrolling above it. Anywhere else (CI logs, a pipe) each event is one line and a compact status
line follows every few seconds, so the output stays readable as plain text.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

REFRESH_S = 0.5
COMPACT_EVERY_S = 4.0


@dataclass(frozen=True)
class SlotView:
    index: int
    job_id: int | None
    label: str
    status: str  # PENDING / RUNNING at the provider, or "free"
    age_s: float  # real seconds in that status


@dataclass(frozen=True)
class JobView:
    job_id: int
    guild: str
    user: str
    what: str
    resolution: str
    state: str
    note: str


@dataclass(frozen=True)
class Snapshot:
    elapsed_s: float
    scale: float
    model: str
    capacity: int
    queue: list[tuple[int, str]]
    slots: list[SlotView]
    jobs: list[JobView]
    counts: dict[str, int] = field(default_factory=dict)


def provider_time(seconds: float, scale: float) -> str:
    """Real demo seconds as the provider would have taken them: 4.2 s at x60 -> '4m12s'."""
    total = round(seconds * scale)
    minutes, secs = divmod(total, 60)
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def fit(text: str, width: int) -> str:
    """Cut to `width` terminal columns (CJK characters take two), padding nothing."""
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def pad(text: str, width: int) -> str:
    text = fit(text, width)
    return text + " " * max(0, width - display_width(text))


def render_full(snap: Snapshot) -> list[str]:
    lines = [
        f"kf2v-bot demo · {clock(snap.elapsed_s)} elapsed · provider clock x{snap.scale:g} "
        f"(≈ {provider_time(snap.elapsed_s, snap.scale)} of a real afternoon)",
    ]
    queue = " · ".join(f"#{job_id} {label}" for job_id, label in snap.queue) or "empty"
    lines.append(f"queue  ({len(snap.queue)} waiting, guilds take turns): {queue}")
    for slot in snap.slots:
        if slot.job_id is None:
            lines.append(f"slot {slot.index}  free")
        else:
            age = provider_time(slot.age_s, snap.scale)
            lines.append(f"slot {slot.index}  #{slot.job_id:<3} {pad(slot.label, 30)} {slot.status.lower():8} {age}")
    counts = " · ".join(f"{n} {state}" for state, n in snap.counts.items() if n)
    lines.append(f"jobs   {counts or 'none yet'}")
    for job in snap.jobs:
        lines.append(
            f"  #{job.job_id:<3} {pad(job.guild, 14)} {pad(job.user, 9)} {pad(job.what, 24)} "
            f"{job.resolution:5} {job.note}"
        )
    return lines


def render_compact(snap: Snapshot) -> str:
    slots = ", ".join(
        f"#{s.job_id} {s.status.lower()} {provider_time(s.age_s, snap.scale)}" if s.job_id is not None else "free"
        for s in snap.slots
    )
    counts = ", ".join(f"{state} {n}" for state, n in snap.counts.items() if n) or "no jobs yet"
    return f"[{clock(snap.elapsed_s)}] queue {len(snap.queue)} | slots: {slots} | {counts}"


class Console:
    """Prints events and the live view; knows whether it talks to a terminal."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self._drawn = 0
        self._block: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._started = time.monotonic()

    # --- plain output --------------------------------------------------------------------------------
    def line(self, text: str = "") -> None:
        """A line above the live view (or just a line when there is none)."""
        if self.tty and self._drawn:
            self._erase()
            self._write(text + "\n")
            self._draw(self._block)
        else:
            self._write(text + "\n")

    def event(self, text: str) -> None:
        self.line(f"[{clock(time.monotonic() - self._started)}] {text}")

    # --- the live view -------------------------------------------------------------------------------
    def start_live(self, snapshot: Callable[[], Awaitable[Snapshot]]) -> None:
        self._started = time.monotonic()
        self._task = asyncio.create_task(self._refresh(snapshot), name="demo-live-view")

    async def stop_live(self, snapshot: Callable[[], Awaitable[Snapshot]] | None = None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if snapshot is not None:  # leave the final state on screen
            snap = await snapshot()
            if self.tty:
                self._show(render_full(snap))
            else:
                self._write(render_compact(snap) + "\n")
        self._drawn = 0
        self._block = []

    async def _refresh(self, snapshot: Callable[[], Awaitable[Snapshot]]) -> None:
        last_compact = 0.0
        while True:
            try:
                snap = await snapshot()
            except Exception as exc:  # a view must never take the demo down
                self.line(f"(live view: {type(exc).__name__}: {exc})")
                snap = None
            if snap is not None:
                if self.tty:
                    self._show(render_full(snap))
                elif time.monotonic() - last_compact >= COMPACT_EVERY_S:
                    last_compact = time.monotonic()
                    self._write(render_compact(snap) + "\n")
            await asyncio.sleep(REFRESH_S)

    def _show(self, lines: list[str]) -> None:
        width = max(40, shutil.get_terminal_size((100, 24)).columns - 1)
        height = max(6, shutil.get_terminal_size((100, 24)).lines - 2)
        block = [fit(line, width) for line in lines][:height]
        self._erase()
        self._draw(block)

    def _erase(self) -> None:
        if self._drawn:
            self._write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self, block: list[str]) -> None:
        self._block = block
        if block:
            self._write("\n".join(block) + "\n")
        self._drawn = len(block)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe: keep the demo going, quietly
            pass
