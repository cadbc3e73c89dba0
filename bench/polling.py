"""polling: how many polls the bot spends per job, and how late it notices the end, next to the official SDK.

One run: the real engine polls its tasks (planner: Poller.next_poll_delay with the per-tier DurationModel),
and for every task the emulator creates, a second poller following the official SDK's wait() schedule (at
once, then 1, 1, 2, 2, 2, 4, 4, 4 s, then every 5 s) polls the very same task on the same emulator. The
emulator's poll trace tells the two apart, so both see identical task timings.

Provider timings are EmulatorConfig.realistic() (queued 0-150 s, running 240-360 s: 300 s +- 20 %) divided
by the time scale, like every time constant of the engine. Figures are in real-time equivalents.

Warm-up: the bot learns run times per tier from its own finished jobs (nothing is pre-seeded). The first
`warmup` tasks (by creation time) teach the model and are left out; the figures are over the rest.
Several accounts (4 at full size, each with its own 2 slots) run in parallel only to collect more samples
per minute: the planner works per job.

* polls_per_job / sdk_polls_per_job: GET /tasks/{id} calls per task, from creation to the first SUCCEEDED.
* detect_*_s / sdk_detect_*_s: the poll that first saw SUCCEEDED minus the task's finish time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench._common import SdkPoller, TracingEmulator, note, percentile, r3, run_queue

DEFAULTS: dict[str, dict[str, float]] = {
    "tiny": {"jobs": 6, "warmup": 2, "accounts": 1, "time_scale": 2000.0},
    "full": {"jobs": 120, "warmup": 24, "accounts": 4, "time_scale": 100.0},
}


async def measure(
    size: str,
    *,
    jobs: int | None = None,
    warmup: int | None = None,
    time_scale: float | None = None,
    seed: int = 11,
    hide_start_times: bool = False,
) -> dict[str, Any]:
    d = DEFAULTS[size]
    n = jobs or int(d["jobs"])
    warm = int(d["warmup"]) if warmup is None else warmup
    scale = time_scale or d["time_scale"]
    accounts = int(d["accounts"])
    note(f"polling: {n} jobs ({warm} warm-up) on {accounts} account(s) at time scale {scale:g}")
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
        )
        try:
            emulator = result.emulator
            tasks = [t for t in emulator.task_times() if t.finished is not None and t.status == "SUCCEEDED"]
            measured = tasks[warm:]
            bot_polls, sdk_polls, bot_detect, sdk_detect = [], [], [], []
            for task in measured:
                assert task.finished is not None
                bot_seen = emulator.first_seen(task.task_id, "bot")
                sdk_seen = emulator.first_seen(task.task_id, "sdk")
                if bot_seen is None or sdk_seen is None:
                    continue
                bot_polls.append(emulator.polls_by(task.task_id, "bot"))
                sdk_polls.append(emulator.polls_by(task.task_id, "sdk"))
                bot_detect.append((bot_seen - task.finished) * scale)
                sdk_detect.append((sdk_seen - task.finished) * scale)
            ppj = sum(bot_polls) / len(bot_polls)
            sdk_ppj = sum(sdk_polls) / len(sdk_polls)
            return {
                "bench": "polling",
                "size": size,
                "time_scale": scale,
                "jobs": len(bot_polls),
                "warmup_jobs": warm,
                "start_times_in_running_answers": not hide_start_times,
                "polls_per_job": r3(ppj),
                "sdk_polls_per_job": r3(sdk_ppj),
                "poll_ratio": r3(ppj / sdk_ppj),
                "detect_p50_s": r3(percentile(bot_detect, 50)),
                "detect_p95_s": r3(percentile(bot_detect, 95)),
                "detect_max_s": r3(max(bot_detect)),
                "sdk_detect_p50_s": r3(percentile(sdk_detect, 50)),
                "sdk_detect_p95_s": r3(percentile(sdk_detect, 95)),
                "sdk_detect_max_s": r3(max(sdk_detect)),
                "detect_mean_s": r3(sum(bot_detect) / len(bot_detect)),
                "sdk_detect_mean_s": r3(sum(sdk_detect) / len(sdk_detect)),
                "limit_violations": len(emulator.stats()["violations"]),
                "wall_s": r3(result.wall_s),
                **result.loop_lag,
            }
        finally:
            if sdk is not None:
                await sdk.close()
            await result.services.stop()
            await result.emulator.stop()
