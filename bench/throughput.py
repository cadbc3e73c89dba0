"""throughput: does the bot keep the account's 2 in-flight slots busy?

A backlog of jobs (200 at full size) is queued through JobService before the engine starts; the engine is
the real one (build_services, a RecordingNotifier instead of Discord) against the DashScope emulator with
the provider's observed timings (EmulatorConfig.realistic(): queued 0-150 s, running 240-360 s), all
divided by the time scale, and the engine's own time constants divided by the same factor.

Figures, in real-time equivalents (measured seconds x time scale), from the emulator's task timeline:

* makespan_s: first task created -> last task finished.
* ideal_makespan_s: a lower bound no schedule can beat with these very tasks: max(sum(d) / 2, max(d)),
  where d = finished - created of each task as the emulator drew it (queued + running; a queued task holds
  an in-flight slot too). It assumes zero hand-over time between tasks and a perfect split of the work
  between the two slots; the durations are only known afterwards, so even a perfect scheduler would
  usually end a little above it.
* slot_utilization: busy slot-seconds / (2 x makespan), busy = sum(d). Includes the drain at the end,
  when the queue is empty and one slot may idle while the other finishes its last task.
* backlog_utilization (extra): the same over [first created, last created], while jobs were still waiting:
  what the scheduler and the poller control.
* limit_violations: creates the emulator refused for exceeding the account limits (in flight or rate).
* handover_bot_p50_ms / handover_provider_p50_ms (extra, measured milliseconds): a freed slot idles from
  the task's finish until the next task exists: the detection delay (provider time), then the hand-over:
  the bot settles the finished job, picks the next, writes it, builds and sends the create; the emulator
  reads it and checks both images. The hand-over is real work that time scaling does not shrink, so here
  each of its milliseconds costs time_scale milliseconds of slot time (1.3 s per job at x100, ~0.35 % of
  utilization); at real speed it costs its milliseconds plus the network.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench._common import TaskTimes, note, percentile, r3, run_queue

DEFAULTS = {"tiny": {"jobs": 6, "time_scale": 2000.0}, "full": {"jobs": 200, "time_scale": 100.0}}


def busy_between(tasks: list[TaskTimes], start: float, end: float) -> float:
    total = 0.0
    for task in tasks:
        assert task.finished is not None
        total += max(0.0, min(task.finished, end) - max(task.created, start))
    return total


async def measure(
    size: str,
    *,
    jobs: int | None = None,
    time_scale: float | None = None,
    seed: int = 7,
    hide_start_times: bool = False,
) -> dict[str, Any]:
    n = jobs or int(DEFAULTS[size]["jobs"])
    scale = time_scale or DEFAULTS[size]["time_scale"]
    note(f"throughput: {n} jobs at time scale {scale:g} (about {n * 375 / 2 / scale:.0f} s)")
    with tempfile.TemporaryDirectory(prefix="kf2v-bench-") as tmp:
        result = await run_queue(Path(tmp), n, time_scale=scale, seed=seed, hide_start_times=hide_start_times)
        try:
            stats = result.emulator.stats()
            tasks = [t for t in result.emulator.task_times() if t.finished is not None]
            durations = [t.duration for t in tasks]
            origin = min(t.created for t in tasks)
            end = max(t.finished for t in tasks if t.finished is not None)
            last_created = max(t.created for t in tasks)
            makespan = end - origin
            busy = sum(durations)
            ideal = max(busy / 2, max(durations))
            backlog_window = last_created - origin
            polls = [result.emulator.polls_by(t.task_id, "bot") for t in tasks]
            detect = [
                (seen - t.finished) * scale
                for t in tasks
                if t.finished is not None and (seen := result.emulator.first_seen(t.task_id, "bot")) is not None
            ]
            handovers = result.emulator.handovers()
            in_flight_peak = max(
                (n for per_model in stats["max_in_flight"].values() for n in per_model.values()), default=0
            )
            return {
                "bench": "throughput",
                "size": size,
                "time_scale": scale,
                "jobs": len(result.job_ids),
                "tasks": len(tasks),
                "makespan_s": r3(makespan * scale),
                "ideal_makespan_s": r3(ideal * scale),
                "makespan_over_ideal": r3(makespan / ideal),
                "slot_utilization": round(busy / (2 * makespan), 4),
                "backlog_utilization": round(busy_between(tasks, origin, last_created) / (2 * backlog_window), 4)
                if backlog_window > 0
                else None,
                "limit_violations": len(stats["violations"]),
                "max_in_flight": in_flight_peak,
                # A freed slot idles from the finish until the next create: the detection delay, then the
                # hand-over (measured ms, not scaled: each real ms is time_scale/1000 s of slot time here).
                "handover_bot_p50_ms": r3(percentile([h[0] for h in handovers], 50) * 1000),
                "handover_provider_p50_ms": r3(percentile([h[1] for h in handovers], 50) * 1000),
                "polls_per_job": r3(sum(polls) / len(polls)),
                "detect_p50_s": r3(percentile(detect, 50)),
                "detect_p95_s": r3(percentile(detect, 95)),
                "wall_s": r3(result.wall_s),
                **result.loop_lag,
            }
        finally:
            await result.services.stop()
            await result.emulator.stop()
