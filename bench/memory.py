"""memory: worst-case pictures under the decode budget (issue 17, item 3), in real processes.

1. Each picture alone, in a fresh process: the bytes `check_image` planned for it against what the process
   really took (its peak RSS over its RSS just before: /proc VmHWM - VmRSS), so the plan is shown to be an
   upper bound of Pillow's work, not a guess.
2. The real bot (`python -m bot run`, as deployed) against the Discord and DashScope emulators in this
   process: four /kf2v at the same moment, as issue 17 asks: two 8000x8000 PNGs (the 0.3 MB transparent one
   and a plain RGB one sent as uploaded), a 48 MP phone photo (8000x6000, EXIF "turn 90°", ~9 MB) and an
   ordinary pair. Every request must be answered (queued, or refused naming the pixel limit) and each
   accepted job submitted (each frame then a base64 data URI in a JSON body, also in the bot's memory)
   and delivered (its video downloaded and posted).
   Figures: the bot's resident memory idle, and the peak of its process group (VmHWM of the bot and of any
   child) through the burst; the target is 600 MiB with the default 256 MiB budget.

`--size tiny` runs the same on pictures 16x smaller with a 16 MiB budget (and 1 MiB re-encodes), and the bot
polls at least every second (KF2V_POLL_MAX_INTERVAL) against a provider 4x faster, so its videos come sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

from PIL import Image

from bench._common import ROOT, note, r3, start_bot_process, wait_for
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig

MIB = 1024 * 1024
TARGET_MIB = 600

DEFAULTS: dict[str, dict[str, Any]] = {
    # side of the square PNGs, the phone photo's stored size, budget and re-encode size in MiB; the bot's
    # longest gap between polls (None: its default, 30 s) and how much faster than the emulator's default
    # the provider runs (tiny only proves the path: its videos come within seconds, not after ~30 s).
    "tiny": {"square": 2000, "phone": (2000, 1500), "budget_mb": 16, "reencode_mb": 1, "poll_max_s": 1.0, "speed": 4.0},
    "full": {
        "square": 8000,
        "phone": (8000, 6000),
        "budget_mb": 256,
        "reencode_mb": 7,
        "poll_max_s": None,
        "speed": 1.0,
    },
}


# --- pictures ------------------------------------------------------------------------------------------


def _png(width: int, height: int, colour_type: int, rows: bytes) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return len(payload).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, colour_type, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def transparent_png(side: int) -> bytes:
    """Issue 17's picture: 8-bit RGBA, every pixel transparent; 0.25 MB at 8000x8000 (zeros compress)."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + side * 4)
    return _png(side, side, 6, b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush())


def plain_png(side: int) -> bytes:
    """8-bit RGB, a horizontal colour ramp repeated on every row: small, sent as uploaded, decoded whole."""
    compressor = zlib.compressobj(6)
    row = b"\x00" + bytes(v for x in range(side) for v in (x * 255 // side, 90, 255 - x * 255 // side))
    return _png(side, side, 2, b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush())


def phone_jpeg(width: int, height: int) -> bytes:
    """A photo-like JPEG (smooth shapes plus sensor-like grain) stored landscape with EXIF orientation 6."""
    small = Image.merge("RGB", [Image.effect_noise((width // 8, height // 8), s) for s in (60, 50, 70)])
    big = small.resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((width, height), 12)
    photo = Image.merge("RGB", [Image.blend(band, grain, 0.2) for band in big.split()])
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=80, exif=exif.tobytes())
    return buffer.getvalue()


def ordinary_jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1280, 720), colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# --- 1: each picture alone, planned vs taken ---------------------------------------------------------------


def _status_kib(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def probe(path: str, budget_mb: int, reencode_mb: int) -> dict[str, Any]:
    """In this (fresh) process: check one picture; what was planned, what the process really took."""
    from bot.errors import InvalidImage
    from bot.jobs.images import ImageLimits, check_image

    data = Path(path).read_bytes()
    limits = ImageLimits(10 * MIB, 240, 8000, reencode_mb * MIB, memory_budget=budget_mb * MIB)
    for warm_up in (ordinary_jpeg((1, 2, 3)), transparent_png(240), plain_png(240)):
        with contextlib.suppress(InvalidImage):  # Pillow's plugins and codecs loaded before the baseline
            check_image(warm_up, limits)
    before = _status_kib("self", "VmRSS")
    try:
        checked = check_image(data, limits)
        outcome: dict[str, Any] = {
            "outcome": "accepted",
            "planned_mib": r3(checked.planned_bytes / MIB),
            "decoded": list(checked.decoded_size),
            "sent": [checked.width, checked.height],
            "reencoded": checked.reencoded,
        }
    except InvalidImage as refusal:
        outcome = {"outcome": refusal.key, "planned_mib": 0.0, **{k: str(v) for k, v in refusal.params.items()}}
    after = _status_kib("self", "VmHWM")
    # An upper bound: when the check never passed the imports' own peak, that peak is what is counted.
    outcome["taken_mib"] = r3(max(0, after - before) / 1024)
    outcome["file_mib"] = r3(len(data) / MIB)
    return outcome


def probe_each(pictures: dict[str, Path], budget_mb: int, reencode_mb: int) -> dict[str, Any]:
    results = {}
    for name, path in pictures.items():
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "bench.memory", "probe", str(path), str(budget_mb), str(reencode_mb)],
            cwd=ROOT, capture_output=True, text=True, check=True, timeout=300,
        )  # fmt: skip
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        note(f"memory: {name} alone: {results[name]}")
    return results


# --- 2: the real bot, four at once -------------------------------------------------------------------------


def _group_peak_kib(pid: int) -> int:
    """VmHWM of the process and of its children (the bot starts none today; a future one is counted)."""
    total = _status_kib(pid, "VmHWM")
    for child in Path("/proc").glob("[0-9]*"):
        try:
            if int((child / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                total += _status_kib(child.name, "VmHWM")
        except (OSError, ValueError, IndexError):
            continue
    return total


async def measure(size: str, seed: int = 17) -> dict[str, Any]:
    from sandbox.discord_emu import DiscordEmulator

    d = DEFAULTS[size]
    side, (phone_w, phone_h) = d["square"], d["phone"]
    note(f"memory: making the pictures ({side}x{side} PNGs, a {phone_w}x{phone_h} JPEG)")
    pictures = {
        "transparent_png": transparent_png(side),
        "plain_png": plain_png(side),
        "phone_jpeg": phone_jpeg(phone_w, phone_h),
        "ordinary_jpeg": ordinary_jpeg((200, 40, 40)),
    }
    last = ordinary_jpeg((40, 40, 200))
    with tempfile.TemporaryDirectory(prefix="kf2v-bench-") as tmp:
        paths = {}
        for name, data in pictures.items():
            paths[name] = Path(tmp) / name
            paths[name].write_bytes(data)
        alone = probe_each(paths, d["budget_mb"], d["reencode_mb"])

        discord_emu = DiscordEmulator(bot_token="bench.memory.token")  # noqa: S106 - the emulator's, not a secret
        await discord_emu.start()
        dashscope = DashScopeEmulator(EmulatorConfig(seed=seed, time_scale=d["speed"]))
        await dashscope.start()
        guild = discord_emu.add_guild("Bench guild", locale="en-US")
        channel = discord_emu.add_text_channel(guild, "videos")
        users = [930_000 + i for i in range(len(pictures))]
        for user in users:
            discord_emu.add_member(guild, user, f"member{user % 10_000}")
        env = {
            "KF2V_IMAGE_MEMORY_BUDGET_MB": str(d["budget_mb"]),
            "KF2V_IMAGE_REENCODE_BYTES": str(d["reencode_mb"] * MIB),
        }
        if d["poll_max_s"] is not None:
            env["KF2V_POLL_MAX_INTERVAL"] = str(d["poll_max_s"])
        bot = await start_bot_process(Path(tmp), discord_emu, dashscope.base_url, **env)
        try:
            pid = bot.process.pid
            await asyncio.sleep(1.0)
            idle_kib = _status_kib(pid, "VmRSS")
            idle_peak_kib = _status_kib(pid, "VmHWM")

            async def send(user: int, name: str, data: bytes) -> Any:
                kind = "image/png" if "png" in name else "image/jpeg"
                files = {"first_frame": (name, data, kind), "last_frame": ("last.jpg", last, "image/jpeg")}
                options = {"prompt": f"worst case: {name}"}
                return await discord_emu.run_command(guild, channel, user, "kf2v", options, attachments=files)

            records = await asyncio.gather(
                *(send(user, name, data) for user, (name, data) in zip(users, pictures.items(), strict=True))
            )
            answers: dict[str, str] = {}

            def all_answered() -> bool:
                for name, record in zip(pictures, records, strict=True):
                    original = record.original_message
                    if name not in answers and original is not None and not original.loading:
                        answers[name] = record.ephemeral_text or record.last_text or ""
                return len(answers) == len(records)

            await wait_for(all_answered, within=300, interval=0.05, what="every request answered")
            queued = [name for name, text in answers.items() if "queued" in text]
            refused = {name: text for name, text in answers.items() if "pixels" in text and "queued" not in text}
            # The accepted jobs are submitted: their frames travel as base64 in the create request (at most
            # 2 at once: the account's limit per model; a third waits for a slot).
            await wait_for(
                lambda: dashscope.stats()["submissions_accepted"] >= min(len(queued), 2),
                within=120,
                what="the accepted jobs submitted",
            )

            def videos() -> int:
                return sum(a.filename.endswith(".mp4") for m in discord_emu.all_messages() for a in m.attachments)

            # ... and each becomes a video, downloaded and posted (the emulator's default timings: seconds).
            await wait_for(lambda: videos() >= len(queued), within=180, what="every accepted job's video posted")
            alive = bot.process.returncode is None
            peak_kib = _group_peak_kib(pid)
            return {
                "bench": "memory",
                "size": size,
                "budget_mib": d["budget_mb"],
                "requests": len(records),
                "answered": len(answers),
                "queued": sorted(queued),
                "refused": sorted(refused),
                "refusal_text": next(iter(refused.values()), ""),
                "submitted": dashscope.stats()["submissions_accepted"],
                "videos_posted": videos(),
                "bot_alive": alive,
                "idle_rss_mib": r3(idle_kib / 1024),
                "idle_peak_mib": r3(idle_peak_kib / 1024),
                "peak_rss_mib": r3(peak_kib / 1024),
                "target_mib": TARGET_MIB,
                "file_mib": {name: r3(len(data) / MIB) for name, data in pictures.items()},
                "alone": alone,
            }
        finally:
            await bot.stop()
            await dashscope.stop()
            await discord_emu.stop()


if __name__ == "__main__" and sys.argv[1:2] == ["probe"]:
    print(json.dumps(probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))), flush=True)
