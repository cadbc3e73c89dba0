"""ack: 100 /kf2v commands within one second, each with two 5 MB images, against the real bot.

The bot runs as its own process (`python -m bot run`, as deployed), connected to the Discord emulator and
a DashScope emulator (realistic timings) that live in this process. The commands come from 100 different
members, one every 10 ms; every command carries the same two 5 MB PNGs of random pixels. For each, the
bot defers, downloads both images from the emulated CDN, checks and stores them, admits the job, posts its
status message with both images as thumbnails, opens a thread and replies: about 20 MB of traffic per
command, 2 GB for the burst (the emulator's half of that work is done by this process).

* ack_p50_ms / ack_p99_ms / ack_max_ms: INTERACTION_CREATE dispatched -> the deferral callback received by
  the emulator (InteractionRecord.latency_ms: what Discord's 3-second rule measures).
* bot_peak_rss_mib (extra): the bot process's peak resident memory (VmHWM) at the end of the burst.
* accepted_p50_s / accepted_max_s (extra): dispatched -> the "queued" reply replaced the deferral (sampled
  every 20 ms); all the image work happens in this time, so it grows with the burst.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import LoopLag, noise_png, note, peak_rss_of, percentile, r3, start_bot_process
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig

DEFAULTS: dict[str, dict[str, float]] = {
    "tiny": {"interactions": 4, "image_mb": 0.2, "window_s": 0.2},
    "full": {"interactions": 100, "image_mb": 5.0, "window_s": 1.0},
}


async def measure(size: str, *, jobs: int | None = None, seed: int = 5) -> dict[str, Any]:
    from sandbox.discord_emu import DiscordEmulator

    d = DEFAULTS[size]
    n = jobs or int(d["interactions"])
    image_bytes = int(d["image_mb"] * 1024 * 1024)
    window = d["window_s"]
    note(f"ack: {n} /kf2v within {window:g} s, two {image_bytes / 1048576:.1f} MB images each")
    first, last = noise_png(image_bytes, seed), noise_png(image_bytes, seed + 1)
    with tempfile.TemporaryDirectory(prefix="kf2v-bench-") as tmp:
        discord_emu = DiscordEmulator(bot_token="bench.ack.token")  # noqa: S106 - the emulator's, not a secret
        await discord_emu.start()
        dashscope = DashScopeEmulator(EmulatorConfig.realistic(seed=seed))
        await dashscope.start()
        guild = discord_emu.add_guild("Bench guild", locale="en-US")
        channel = discord_emu.add_text_channel(guild, "videos")
        users = [920_000 + i for i in range(n)]
        for user in users:
            discord_emu.add_member(guild, user, f"member{user % 10_000}")
        bot = await start_bot_process(Path(tmp), discord_emu, dashscope.base_url)
        lag = LoopLag()
        try:
            lag.start()
            records = []
            started = time.monotonic()
            for i, user in enumerate(users):
                due = started + window * i / n
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                record = await discord_emu.run_command(
                    guild, channel, user, "kf2v", {"prompt": f"burst {i}: a red square turns blue"},
                    attachments={
                        "first_frame": ("first.png", first, "image/png"),
                        "last_frame": ("last.png", last, "image/png"),
                    },
                )  # fmt: skip
                records.append(record)
            dispatched_s = time.monotonic() - started
            await asyncio.gather(*(record.wait_response(30) for record in records))
            accepted: dict[int, float] = {}
            deadline = time.monotonic() + 300
            while len(accepted) < n and time.monotonic() < deadline:
                now = time.monotonic()
                for record in records:
                    original = record.original_message
                    if record.id not in accepted and original is not None and not original.loading:
                        accepted[record.id] = now - record.created_at
                await asyncio.sleep(0.02)
            emulator_lag = await lag.stop()
            acks = [record.latency_ms for record in records if record.latency_ms is not None]
            queued = sum(1 for record in records if "queued" in (record.ephemeral_text or record.last_text or ""))
            return {
                "bench": "ack",
                "size": size,
                "interactions": n,
                "image_mb": d["image_mb"],
                "dispatched_within_s": r3(dispatched_s),
                "ack_p50_ms": r3(percentile(acks, 50)),
                "ack_p99_ms": r3(percentile(acks, 99)),
                "ack_max_ms": r3(max(acks)),
                "acked": len(acks),
                "accepted_p50_s": r3(percentile(list(accepted.values()), 50)),
                "accepted_max_s": r3(max(accepted.values(), default=float("nan"))),
                "replied_queued": queued,
                # The bot's peak resident memory through the burst (2 GB of transfers; the attachment budget,
                # KF2V_ATTACHMENT_MEMORY_MB, bounds what the requests hold at once).
                "bot_peak_rss_mib": round(peak_rss_of(bot.process.pid), 1),
                # How late this process (the emulators' side) ran its own callbacks meanwhile: the emulator
                # timestamps the callback when it gets to it, so its lag is part of the figures above.
                "emulator_loop_lag_p99_ms": emulator_lag["loop_lag_p99_ms"],
                "emulator_loop_lag_max_ms": emulator_lag["loop_lag_max_ms"],
            }
        finally:
            await bot.stop()
            await dashscope.stop()
            await discord_emu.stop()
