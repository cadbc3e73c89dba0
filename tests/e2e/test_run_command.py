"""`kf2v-bot run` as a real process, pointed at both emulators: from /kf2v to the mp4 in the thread."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from sandbox.discord_emu import DiscordEmulator, RestFault
from tests.support import corpus
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-run-test-5f0e1d2c3b4a"


async def test_run_serves_kf2v_end_to_end_and_stops_cleanly(tmp_path: Path) -> None:
    discord = DiscordEmulator(bot_token="run-test-token.abc.def")
    await discord.start()
    guild = discord.add_guild("Run", locale="en-US")
    channel = discord.add_text_channel(guild, "videos")
    discord.add_member(guild, 4242, "member")
    provider = DashScopeEmulator(EmulatorConfig(pending_s=(0.1, 0.2), running_s=(0.3, 0.5)))
    await provider.start()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": "run-test-token.abc.def",
        "DASHSCOPE_API_KEY": API_KEY,
        "DASHSCOPE_BASE_URL": provider.base_url,
        "KF2V_DISCORD_API_BASE": discord.api_base,
        "KF2V_DISCORD_GATEWAY": discord.gateway_url,
        "KF2V_DATA_DIR": str(tmp_path / "data"),
        "KF2V_POLL_MIN_INTERVAL": "0.1",
        "KF2V_POLL_MAX_INTERVAL": "0.5",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await discord.wait_ready(30)
        await wait_until(lambda: discord.sync_count >= 1, within=30)
        record = await discord.run_command(
            guild, channel, 4242, "kf2v", {"prompt": "a red square turns blue"},
            attachments={
                "first_frame": ("a.png", corpus.good_png(320, 240, corpus.RED), "image/png"),
                "last_frame": ("b.png", corpus.good_png(320, 240, corpus.BLUE), "image/png"),
            },
        )  # fmt: skip
        await record.wait_response(5)

        def video_posted() -> bool:
            return any(a.filename.endswith(".mp4") for m in discord.all_messages() for a in m.attachments)

        await wait_until(video_posted, within=60)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        assert proc.returncode == 0
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        assert "Traceback" not in err
        assert API_KEY not in err and "run-test-token" not in err
        assert "job 1 delivered" in err
        posts = [m for m in discord.all_messages() if any(a.filename.endswith(".mp4") for a in m.attachments)]
        assert len(posts) == 1 and discord.channel(posts[0].channel_id).parent_id == channel
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await provider.stop()
        await discord.stop()


async def test_a_stop_while_a_post_is_answered_still_records_the_delivery(tmp_path: Path) -> None:
    """SIGTERM lands after Discord stored the video's post but before its answer reached the bot (the emulator
    holds the answer): the stop lets that post finish and records the delivery before exiting."""
    discord = DiscordEmulator(bot_token="run-test-token.abc.def")
    await discord.start()
    guild = discord.add_guild("Run", locale="en-US")
    channel = discord.add_text_channel(guild, "videos")
    discord.add_member(guild, 4242, "member")
    provider = DashScopeEmulator(EmulatorConfig(pending_s=(0.1, 0.2), running_s=(0.3, 0.5)))
    await provider.start()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": "run-test-token.abc.def",
        "DASHSCOPE_API_KEY": API_KEY,
        "DASHSCOPE_BASE_URL": provider.base_url,
        "KF2V_DISCORD_API_BASE": discord.api_base,
        "KF2V_DISCORD_GATEWAY": discord.gateway_url,
        "KF2V_DATA_DIR": str(tmp_path / "data"),
        "KF2V_POLL_MIN_INTERVAL": "0.1",
        "KF2V_POLL_MAX_INTERVAL": "0.5",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    held: RestFault | None = None
    lines: list[str] = []
    try:
        await discord.wait_ready(30)
        await wait_until(lambda: discord.sync_count >= 1, within=30)
        record = await discord.run_command(
            guild, channel, 4242, "kf2v", {"prompt": "a red square turns blue"},
            attachments={
                "first_frame": ("a.png", corpus.good_png(320, 240, corpus.RED), "image/png"),
                "last_frame": ("b.png", corpus.good_png(320, 240, corpus.BLUE), "image/png"),
            },
        )  # fmt: skip
        await record.wait_response(5)
        await wait_until(lambda: any(c.is_thread for c in discord.channels.values()), within=30)
        thread = next(c.id for c in discord.channels.values() if c.is_thread)
        # The video's post in the job's thread: stored by Discord, its answer held.
        held = discord.hold_rest(f"/channels/{thread}/messages", method="POST", after=True)

        def video_posted() -> bool:
            assert held is not None
            return held.held == 1 and any(
                a.filename.endswith(".mp4") for m in discord.all_messages() for a in m.attachments
            )

        await wait_until(video_posted, within=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None

        async def until_waiting_for_the_post() -> None:
            assert proc.stderr is not None
            while line := (await proc.stderr.readline()).decode():
                lines.append(line)
                if "finishing its post first" in line:
                    return
            raise AssertionError("the bot exited without waiting for the post: " + "".join(lines[-20:]))

        await asyncio.wait_for(until_waiting_for_the_post(), 30)
        held.release()  # Discord's answer arrives during the stop
        await asyncio.wait_for(proc.wait(), 30)
        err = "".join(lines) + (await proc.stderr.read()).decode()
        assert proc.returncode == 0
        assert "Traceback" not in err
        assert "job 1 delivered" in err
        posts = [m for m in discord.all_messages() if any(a.filename.endswith(".mp4") for a in m.attachments)]
        assert len(posts) == 1
    finally:
        if held is not None:
            held.stop()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await provider.stop()
        await discord.stop()


async def test_run_with_a_rejected_token_exits_2_with_one_line(tmp_path: Path) -> None:
    discord = DiscordEmulator(bot_token="the-right-token")
    await discord.start()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": "a-wrong-token",
        "DASHSCOPE_API_KEY": API_KEY,
        "KF2V_DISCORD_API_BASE": discord.api_base,
        "KF2V_DISCORD_GATEWAY": discord.gateway_url,
        "KF2V_DATA_DIR": str(tmp_path / "data"),
    }
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2
        assert "DISCORD_TOKEN" in err.decode().strip().splitlines()[-1]
        assert "Traceback" not in err.decode() and "a-wrong-token" not in err.decode()
    finally:
        await discord.stop()
