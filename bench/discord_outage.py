"""discord_outage: Discord's REST API answers 503 to every post for a while, then recovers; how long after the
recovery is each waiting video posted, with the real, unscaled delivery back-off (2 s doubling to a 30 s cap).

The real bot (discord.py, cogs, worker, DiscordNotifier) runs in this process between the Discord emulator and a
fast DashScope emulator. Jobs come in as /kf2v commands; once each has its thread the emulator answers 503 to
every POST of a message (videos and owner DMs alike) for `outage_s`, measured from the moment the first video
was ready; then the fault stops. Per video: its post's time (the emulator's record) minus the moment the fault
stopped. The issue 17 figure before the cap: a 150 s outage delayed the posts by another ~150 s.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench._common import flat_png, note, open_world, percentile, r3, retime_engine, wait_for
from bot.jobs.models import JobState
from sandbox.dashscope_emulator import EmulatorConfig

DEFAULTS: dict[str, dict[str, float]] = {
    # poll_scale: the engine's polling (priors, poll gaps) compressed by this factor, the delivery back-off
    # under test kept real; tiny only proves the path, so its videos are noticed within seconds, not ~25 s.
    "tiny": {"jobs": 2, "outage_s": 3.0, "poll_scale": 100.0},
    "full": {"jobs": 8, "outage_s": 150.0, "poll_scale": 1.0},
}


def _poll_gaps(scale: float) -> dict[str, float]:
    """The poll gap settings compressed by `scale` (none at 1: the defaults)."""
    if scale == 1.0:
        return {}
    return {"KF2V_POLL_MIN_INTERVAL": 1.0 / scale, "KF2V_POLL_MAX_INTERVAL": 30.0 / scale}


async def measure(size: str, *, jobs: int | None = None, seed: int = 13, **_: Any) -> dict[str, Any]:
    d = DEFAULTS[size]
    n = jobs or int(d["jobs"])
    outage_s, poll_scale = d["outage_s"], d["poll_scale"]
    emulator = EmulatorConfig(seed=seed, pending_s=(0.1, 0.3), running_s=(0.5, 1.0))
    first, last = flat_png(colour=(200, 40, 40)), flat_png(colour=(40, 40, 200))
    with tempfile.TemporaryDirectory(prefix="kf2v-bench-") as tmp:
        world = await open_world(Path(tmp), emulator, time_scale=1.0, users=n, **_poll_gaps(poll_scale))
        try:
            worker = world.services.worker
            if poll_scale != 1.0:
                real = worker.config
                retime_engine(world.services, poll_scale)
                worker.config = replace(
                    worker.config,
                    delivery_backoff_s=real.delivery_backoff_s,
                    delivery_backoff_max_s=real.delivery_backoff_max_s,
                )
            cap = worker.config.delivery_backoff_max_s
            note(f"discord_outage: {n} jobs, 503 on every post for {outage_s:g} s, back-off cap {cap:g} s")
            for i, user in enumerate(world.users):
                record = await world.discord.run_command(
                    world.guild, world.channel, user, "kf2v", {"prompt": f"outage {i}", "resolution": "480P"},
                    attachments={
                        "first_frame": ("first.png", first, "image/png"),
                        "last_frame": ("last.png", last, "image/png"),
                    },
                )  # fmt: skip
                await record.wait_response(10)
            store = world.services.store

            async def threads_made() -> bool:
                found = await store.all_jobs()
                return len(found) >= n and all(job.thread_id for job in found)

            await wait_for(threads_made, within=60, what="every job's thread")
            outage = world.discord.inject_rest_errors(503, None, route_contains="/messages", method="POST")

            async def all_made() -> bool:
                return (await store.count_by_state()).get(JobState.SUCCEEDED, 0) >= n

            await wait_for(all_made, within=120, interval=0.05, what="every video made")
            await asyncio.sleep(outage_s)
            outage.stop()
            recovered = time.monotonic()

            async def all_delivered() -> bool:
                return (await store.count_by_state()).get(JobState.DELIVERED, 0) >= n

            await wait_for(all_delivered, within=cap * 2 + 60, interval=0.05, what=f"{n} videos posted")
            after = [
                m.created_at - recovered
                for m in world.discord.all_messages()
                if any(a.filename.endswith(".mp4") for a in m.attachments)
            ]
            attempts = [job.delivery_attempts for job in await store.all_jobs()]
            return {
                "bench": "discord_outage",
                "size": size,
                "jobs": n,
                "outage_s": outage_s,
                "backoff_cap_s": cap,
                "refused_posts": outage.taken,
                "delivery_attempts_max": max(attempts),
                "after_recovery_p50_s": r3(percentile(after, 50)),
                "after_recovery_max_s": r3(max(after)),
            }
        finally:
            await world.close()
