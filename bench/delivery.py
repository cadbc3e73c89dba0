"""delivery: provider SUCCEEDED -> the mp4 posted in the job's thread, with 8 MB videos over loopback.

The real bot (discord.py, cogs, worker, DiscordNotifier) runs in this process between the Discord emulator
and the DashScope emulator; jobs come in as /kf2v commands (so each has its status message and thread).
Provider timings are EmulatorConfig.realistic() divided by the time scale (the engine's time constants
too), and the emulator pads every video to 8 MB (EmulatorConfig.video_min_bytes), so each delivery is an
8 MB download from the provider and an 8 MB upload to Discord.

Per job, two parts with different clocks:
* detection: the task's finish time -> the bot's poll that saw SUCCEEDED. Provider time: measured x time
  scale, a real-time equivalent (the polling bench measures the same planner on more jobs).
* after_poll: that poll -> the message with the mp4 attachment created in the thread (settle the cost,
  download 8 MB, store it, upload 8 MB). I/O is not scaled: measured seconds, as they are.
deliver_p50_s / deliver_p95_s are percentiles of detection + after_poll per job.

Warm-up: the first jobs teach the poll planner the run times (and make the emulator render its video once);
the figures are over the rest.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench._common import flat_png, note, open_world, percentile, r3, wait_for
from bot.jobs.models import JobState
from sandbox.dashscope_emulator import EmulatorConfig

MIB = 1024 * 1024
DEFAULTS: dict[str, dict[str, float]] = {
    "tiny": {"jobs": 3, "warmup": 1, "time_scale": 1000.0, "video_mb": 1.0},
    "full": {"jobs": 24, "warmup": 4, "time_scale": 100.0, "video_mb": 8.0},
}


async def measure(
    size: str, *, jobs: int | None = None, time_scale: float | None = None, seed: int = 13
) -> dict[str, Any]:
    d = DEFAULTS[size]
    n = jobs or int(d["jobs"])
    warm = min(int(d["warmup"]), n - 1)
    scale = time_scale or d["time_scale"]
    video_bytes = int(d["video_mb"] * MIB)
    note(f"delivery: {n} jobs ({warm} warm-up), {video_bytes / MIB:.0f} MB videos, time scale {scale:g}")
    emulator = EmulatorConfig.realistic(time_scale=scale, seed=seed, video_min_bytes=video_bytes)
    first, last = flat_png(colour=(200, 40, 40)), flat_png(colour=(40, 40, 200))
    with tempfile.TemporaryDirectory(prefix="kf2v-bench-") as tmp:
        world = await open_world(Path(tmp), emulator, time_scale=scale, users=n)
        try:
            for i, user in enumerate(world.users):
                record = await world.discord.run_command(
                    world.guild, world.channel, user, "kf2v", {"prompt": f"delivery {i}: a red square turns blue"},
                    attachments={
                        "first_frame": ("first.png", first, "image/png"),
                        "last_frame": ("last.png", last, "image/png"),
                    },
                )  # fmt: skip
                await record.wait_response(10)
            store = world.services.store

            async def all_delivered() -> bool:
                return (await store.count_by_state()).get(JobState.DELIVERED, 0) >= n

            expected = n * 375 / 2 / scale
            await wait_for(all_delivered, within=expected * 2 + 120, interval=0.05, what=f"{n} videos posted")

            finished = {t.task_id: t.finished for t in world.dashscope.task_times()}
            posted: dict[str, float] = {}  # attachment filename -> when the message was created (monotonic)
            for message in world.discord.all_messages():
                for attachment in message.attachments:
                    if attachment.filename.endswith(".mp4"):
                        posted[attachment.filename] = message.created_at
            rows = []
            for job in await store.all_jobs():
                assert job.task_id is not None
                done = finished.get(job.task_id)
                seen = world.dashscope.first_seen(job.task_id, "bot")
                at = posted.get(f"kf2v-{job.id}.mp4")
                if done is None or seen is None or at is None:
                    continue
                rows.append((done, (seen - done) * scale, at - seen))
            rows.sort()
            measured = rows[warm:]
            detect = [row[1] for row in measured]
            after = [row[2] for row in measured]
            total = [row[1] + row[2] for row in measured]
            sizes = [a.size for m in world.discord.all_messages() for a in m.attachments if a.filename.endswith(".mp4")]
            return {
                "bench": "delivery",
                "size": size,
                "time_scale": scale,
                "jobs": len(measured),
                "warmup_jobs": warm,
                "video_mb": round(min(sizes) / MIB, 2),
                "deliver_p50_s": r3(percentile(total, 50)),
                "deliver_p95_s": r3(percentile(total, 95)),
                "after_poll_p50_s": r3(percentile(after, 50)),
                "after_poll_p95_s": r3(percentile(after, 95)),
                "after_poll_max_s": r3(max(after)),
                "detect_p50_s": r3(percentile(detect, 50)),
                "detect_p95_s": r3(percentile(detect, 95)),
            }
        finally:
            await world.close()
