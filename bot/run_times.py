"""How long the provider takes, before the bot has seen any task of a tier: the poll planner's priors.

Catalog data, kept apart from the model catalog (prices, limits and names change on other days): per (model,
resolution, duration) the seconds a task waits in the provider's queue and the range it runs, each with its
source: `observed` (tasks this project ran) or `documented` (an official page), and anything neither confirms
in `unconfirmed`. A tier's own finished tasks replace its prior as they accumulate
(`bot.jobs.scheduler.DurationModel`); those figures are kept in the database across restarts.

Rows match most specific first: an exact (model, resolution, duration), then `*` for any resolution or duration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_KF2V_API = "https://help.aliyun.com/zh/model-studio/image-to-video-by-first-and-last-frame-api-reference"
_OBSERVED = "observed: this project's kf2v tasks (docs/performance.md: queued 0-150 s, running 240-360 s)"
ANY = "*"

RUN_TIME_PRIORS: dict[str, Any] = {
    "sources": {
        "observed": _OBSERVED,
        # "由于图生视频任务耗时较长(通常为1-5分钟)": creation to result, queue included (read 2026-12-06).
        "documented": f"{_KF2V_API} (tasks 'usually take 1-5 minutes', queue included; read 2026-12-06)",
    },
    "tiers": [
        # model, resolution, duration: queued seconds (mean), running seconds (low, high), source
        {"model": "wan2.2-kf2v-flash", "resolution": ANY, "duration": 5,
         "queued_mean_s": 75, "running_s": [240, 360], "source": "observed"},
        {"model": "wanx2.1-kf2v-plus", "resolution": ANY, "duration": 5,
         "queued_mean_s": 75, "running_s": [240, 360], "source": "observed"},
        # wan2.7-i2v: no task of it observed here and no page gives its time per length; the kf2v page's
        # 1-5 minutes stands in for every resolution and duration until its own tasks are seen.
        {"model": "wan2.7-i2v", "resolution": ANY, "duration": ANY,
         "queued_mean_s": 30, "running_s": [60, 300], "source": "documented", "unconfirmed": True},
    ],
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RunTimePrior:
    """A tier's expected provider times before any of its tasks is seen (seconds)."""

    queued_mean_s: float
    running_s: tuple[float, float]
    source: str
    unconfirmed: bool = False

    def compressed(self, factor: float) -> RunTimePrior:
        """The same prior with every time divided by `factor` (the sandbox and benchmarks compress time)."""
        low, high = self.running_s
        return RunTimePrior(self.queued_mean_s / factor, (low / factor, high / factor), self.source, self.unconfirmed)


# Unknown models (a catalog file's own): the planner's old guess, 300 s +- 50 %.
FALLBACK = RunTimePrior(60.0, (150.0, 450.0), "none: a guess (300 s +- 50 %) until the tier's tasks are seen", True)


class RunTimePriors:
    """Looks a tier's prior up in `RUN_TIME_PRIORS` (or data of the same shape)."""

    def __init__(self, data: dict[str, Any] | None = None, *, time_scale: float = 1.0) -> None:
        raw = RUN_TIME_PRIORS if data is None else data
        self.sources: dict[str, str] = dict(raw.get("sources", {}))
        self.time_scale = time_scale
        self._rows: list[tuple[str, str, str, RunTimePrior]] = []
        for row in raw["tiers"]:
            low, high = (float(x) for x in row["running_s"])
            if not 0 < low <= high:
                raise ValueError(f"run-time prior of {row['model']}: running_s {row['running_s']} is not a range")
            source = str(row["source"])
            prior = RunTimePrior(float(row["queued_mean_s"]), (low, high), source, bool(row.get("unconfirmed")))
            self._rows.append((str(row["model"]), str(row["resolution"]), str(row["duration"]), prior))

    def compressed(self, time_scale: float) -> RunTimePriors:
        """These priors with time compressed `time_scale` times (sandbox, demo, benchmarks)."""
        copy = RunTimePriors({"sources": self.sources, "tiers": []}, time_scale=self.time_scale * time_scale)
        copy._rows = self._rows
        return copy

    def lookup(self, model: str, resolution: str, duration: int | None) -> RunTimePrior:
        """The most specific row for the tier (no duration: any row of the model and resolution), else
        `FALLBACK`; compressed by the time scale."""
        best: tuple[int, RunTimePrior] | None = None
        for row_model, row_resolution, row_duration, prior in self._rows:
            duration_fits = duration is None or row_duration in (str(duration), ANY)
            if row_model != model or row_resolution not in (resolution, ANY) or not duration_fits:
                continue
            rank = (row_resolution != ANY) + (row_duration != ANY)
            if best is None or rank > best[0]:
                best = (rank, prior)
        prior = best[1] if best is not None else FALLBACK
        return prior.compressed(self.time_scale) if self.time_scale != 1.0 else prior
