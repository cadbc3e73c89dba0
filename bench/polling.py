"""polling: how many polls the bot spends per job, and how late it notices the end, next to the official SDK.

One run: the real engine polls its tasks (planner: Poller.next_poll_delay with the per-tier DurationModel),
and for every task the emulator creates, a second poller following the official SDK's wait() schedule (at
once, then 1, 1, 2, 2, 2, 4, 4, 4 s, then every 5 s) polls the very same task on the same emulator. The
emulator's poll trace tells the two apart, so both see identical task timings.

Provider timings are EmulatorConfig.realistic() (queued 0-150 s, running 240-360 s: 300 s +- 20 %) divided
by the time scale, like every time constant of the engine. Figures are in real-time equivalents.

Warm run. Warm-up: the bot learns run times per tier from its own finished jobs (nothing is pre-seeded). The first
`warmup` tasks (by creation time) teach the model and are left out; the figures are over the rest.
Several accounts (4 at full size, each with its own 2 slots) run in parallel only to collect more samples
per minute: the planner works per job.

Cold start (`cold_start` in the output; issue 18): a fresh bot, nothing learnt and an empty database, its first
12 tasks (one account, provider times x50 compressed) all measured: the planner starts from the run-time priors
(bot/run_times.py). `--running-s LO HI` runs the provider at other running times than the prior says (a
provider that got slower or faster), to see what a wrong prior costs.

* polls_per_job / sdk_polls_per_job: GET /tasks/{id} calls per task, from creation to the first SUCCEEDED.
* detect_*_s / sdk_detect_*_s: the poll that first saw SUCCEEDED minus the task's finish time;
  first_task_detect_s: the first measured task's; tasks_noticed_after_sdk_p50: how many were noticed later than
  the SDK's median.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import PROVIDER_RUNNING_S, SDK_STEADY, SdkPoller, TracingEmulator, note, percentile, r3, run_queue

DEFAULTS: dict[str, dict[str, float]] = {
    "tiny": {"jobs": 6, "warmup": 2, "accounts": 1, "time_scale": 2000.0},
    "full": {"jobs": 120, "warmup": 24, "accounts": 4, "time_scale": 100.0},
}
# The cold start (issue 18): fresh bots, nothing learnt and nothing in their database, each one's first tasks all
# measured; several runs (other provider seeds) pooled, since 12 tasks alone give a noisy median.
COLD: dict[str, dict[str, float]] = {
    "tiny": {"jobs": 4, "runs": 1, "time_scale": 500.0},
    "full": {"jobs": 12, "runs": 3, "time_scale": 50.0},
}


@dataclass
class Observed:
    """Per measured task: polls and detection delays (provider seconds) of the bot and of the SDK."""

    bot_polls: list[int] = field(default_factory=list)
    sdk_polls: list[int] = field(default_factory=list)
    bot_detect: list[float] = field(default_factory=list)
    sdk_detect: list[float] = field(default_factory=list)
    first_task_detect: list[float] = field(default_factory=list)  # each run's first task
    violations: int = 0
    wall_s: float = 0.0
    loop_lag: dict[str, float] = field(default_factory=dict)

    def add(self, other: Observed) -> None:
        self.bot_polls += other.bot_polls
        self.sdk_polls += other.sdk_polls
        self.bot_detect += other.bot_detect
        self.sdk_detect += other.sdk_detect
        self.first_task_detect += other.first_task_detect
        self.violations += other.violations
        self.wall_s += other.wall_s
        for key, value in other.loop_lag.items():
            self.loop_lag[key] = max(self.loop_lag.get(key, 0.0), value)

    def figures(self) -> dict[str, Any]:
        ppj = sum(self.bot_polls) / len(self.bot_polls)
        sdk_ppj = sum(self.sdk_polls) / len(self.sdk_polls)
        bot, sdk = self.bot_detect, self.sdk_detect
        sdk_p50 = percentile(sdk, 50)
        return {
            "jobs": len(self.bot_polls),
            "polls_per_job": r3(ppj),
            "sdk_polls_per_job": r3(sdk_ppj),
            "poll_ratio": r3(ppj / sdk_ppj),
            "detect_p50_s": r3(percentile(bot, 50)),
            "detect_p95_s": r3(percentile(bot, 95)),
            "detect_max_s": r3(max(bot)),
            "first_task_detect_s": [r3(d) for d in self.first_task_detect],
            "sdk_detect_p50_s": r3(sdk_p50),
            "sdk_detect_p95_s": r3(percentile(sdk, 95)),
            "sdk_detect_max_s": r3(max(sdk)),
            "detect_mean_s": r3(sum(bot) / len(bot)),
            "sdk_detect_mean_s": r3(sum(sdk) / len(sdk)),
            # The bar for the cold start: noticed no later than the SDK's median, at <= 1/3 of its polls.
            "tasks_noticed_after_sdk_p50": sum(1 for d in bot if d > sdk_p50),
            "limit_violations": self.violations,
            "wall_s": r3(self.wall_s),
            **self.loop_lag,
        }


async def measure(
    size: str,
    *,
    jobs: int | None = None,
    warmup: int | None = None,
    time_scale: float | None = None,
    seed: int = 11,
    hide_start_times: bool = False,
    running_s: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The cold start, then the warm run; one JSON line with both (the warm figures at the top level)."""
    common = {
        "start_times_in_running_answers": not hide_start_times,
        "provider_running_s": list(running_s or PROVIDER_RUNNING_S),
    }
    cold = COLD[size]
    cold_scale = time_scale or cold["time_scale"]
    pooled = Observed()
    for run in range(int(cold["runs"])):
        pooled.add(await _run(int(cold["jobs"]), 0, cold_scale, 1, seed + run, hide_start_times, running_s))
    d = DEFAULTS[size]
    warm = int(d["warmup"]) if warmup is None else warmup
    scale = time_scale or d["time_scale"]
    observed = await _run(jobs or int(d["jobs"]), warm, scale, int(d["accounts"]), seed, hide_start_times, running_s)
    return {
        "bench": "polling",
        "size": size,
        "time_scale": scale,
        "warmup_jobs": warm,
        **common,
        **observed.figures(),
        "cold_start": {
            "runs": int(cold["runs"]),
            "jobs_per_run": int(cold["jobs"]),
            "time_scale": cold_scale,
            "warmup_jobs": 0,
            **pooled.figures(),
        },
    }


async def _run(
    n: int,
    warm: int,
    scale: float,
    accounts: int,
    seed: int,
    hide_start_times: bool,
    running_s: tuple[float, float] | None,
) -> Observed:
    note(f"polling: {n} jobs ({warm} warm-up) on {accounts} account(s) at time scale {scale:g}, seed {seed}")
    sdk: SdkPoller | None = None

    def ready(emulator: TracingEmulator) -> None:
        nonlocal sdk
        sdk = SdkPoller(emulator.base_url, scale)

    def created(task_id: str, authorization: str) -> None:
        assert sdk is not None
        sdk.watch(task_id, authorization)

    with tempfile.TemporaryDirectory(prefix="kf2v-bench-") as tmp:
        result = await run_queue(
            Path(tmp),
            n,
            time_scale=scale,
            seed=seed,
            accounts=accounts,
            on_created=created,
            emulator_ready=ready,
            hide_start_times=hide_start_times,
            running_s=running_s,
        )
        try:
            if sdk is not None:
                await sdk.drain(3 * SDK_STEADY / scale + 1)  # the SDK may notice the last finish after the bot
            emulator = result.emulator
            tasks = [t for t in emulator.task_times() if t.finished is not None and t.status == "SUCCEEDED"]
            found = Observed(
                violations=len(emulator.stats()["violations"]), wall_s=result.wall_s, loop_lag=dict(result.loop_lag)
            )
            for task in tasks[warm:]:
                assert task.finished is not None
                bot_seen = emulator.first_seen(task.task_id, "bot")
                sdk_seen = emulator.first_seen(task.task_id, "sdk")
                if bot_seen is None or sdk_seen is None:
                    continue
                found.bot_polls.append(emulator.polls_by(task.task_id, "bot"))
                found.sdk_polls.append(emulator.polls_by(task.task_id, "sdk"))
                found.bot_detect.append((bot_seen - task.finished) * scale)
                found.sdk_detect.append((sdk_seen - task.finished) * scale)
            found.first_task_detect = found.bot_detect[:1]
            return found
        finally:
            if sdk is not None:
                await sdk.close()
            await result.services.stop()
            await result.emulator.stop()
