"""SIGKILL `kf2v-bot run` at every step of a delivery, for a video that fits the server's upload limit and one
over it; restart it on the same data: every video is posted once, as a file or a link, and nobody is charged for
a video that is not posted.

Six jobs, one per (step x size), all caught at their step by the Discord emulator at once, then one SIGKILL:
- downloaded: the mp4 is on disk, Discord answers 503 to its post (nothing posted);
- upload in flight: Discord holds the post before acting on it (nothing posted);
- posted but not recorded: Discord stored the post and holds its answer (posted; the bot never heard).
Sizes: the 12 MiB video fits a level-2 boosted server (50 MiB) as a file; on an unboosted one (10 MiB) its
provider link is posted. The restart runs recovery before the gateway has sent the guilds: the real limit must
still be used (no 10 MiB guess), and the link of a video found on disk must be asked for again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.jobs.models import ChargeState, JobState
from bot.jobs.store import JobStore
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from sandbox.discord_emu import MIB, DiscordEmulator, RestFault
from tests.reliability.test_crash_recovery import Database
from tests.support import corpus
from tests.support.ledger_check import billed_by_task, check_ledger, delivery_problems, job_states
from tests.support.reliability import videos_per_job
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-restart-test-1a2b3c4d"
TOKEN = "restart-test-token.abc.def"
STEPS = ("downloaded", "upload in flight", "posted but not recorded")
VIDEO_BYTES = 12 * MIB


def start_bot(tmp: Path, discord: DiscordEmulator, provider: DashScopeEmulator) -> Any:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp),
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": TOKEN,
        "DASHSCOPE_API_KEY": API_KEY,
        "DASHSCOPE_BASE_URL": provider.base_url,
        "KF2V_DISCORD_API_BASE": discord.api_base,
        "KF2V_DISCORD_GATEWAY": discord.gateway_url,
        "KF2V_DATA_DIR": str(tmp / "data"),
        "KF2V_POLL_MIN_INTERVAL": "0.1",
        "KF2V_POLL_MAX_INTERVAL": "0.5",
        "KF2V_MAX_CONCURRENT_TASKS": "6",
    }
    return asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=tmp, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.timeout(180)
async def test_a_restart_at_every_step_of_delivery_posts_every_video_once(tmp_path: Path) -> None:
    discord = DiscordEmulator(bot_token=TOKEN)
    await discord.start()
    guilds = {"fits": discord.add_guild("Boosted", locale="en-US", premium_tier=2),
              "over": discord.add_guild("Plain", locale="en-US", premium_tier=0)}  # fmt: skip
    channels = {size: discord.add_text_channel(guild, "videos") for size, guild in guilds.items()}
    provider = DashScopeEmulator(
        EmulatorConfig(pending_s=(0.1, 0.2), running_s=(2.0, 2.5), video_min_bytes=VIDEO_BYTES)
    )
    await provider.start()
    database = Database(tmp_path / "data", {})
    proc = await start_bot(tmp_path, discord, provider)
    faults: list[RestFault] = []
    try:
        await discord.wait_ready(30)
        await wait_until(lambda: discord.sync_count >= 1, within=30)
        cases: list[tuple[str, str]] = [(size, step) for size in guilds for step in STEPS]
        for n, (size, _) in enumerate(cases):
            user = 5000 + n
            discord.add_member(guilds[size], user, f"member{n}")
            record = await discord.run_command(
                guilds[size], channels[size], user, "kf2v", {"prompt": f"case {n}", "resolution": "480P"},
                attachments={
                    "first_frame": ("a.png", corpus.good_png(320, 240, corpus.RED), "image/png"),
                    "last_frame": ("b.png", corpus.good_png(320, 240, corpus.BLUE), "image/png"),
                },
            )  # fmt: skip
            await record.wait_response(10)

        async def threads() -> dict[int, int]:  # job id -> thread id, once each job has its thread
            return {int(r[0]): int(r[1]) for r in await database._rows("SELECT id, thread_id FROM jobs") if r[1]}

        await wait_until(lambda: _has(threads(), len(cases)), within=30)
        thread_of = await threads()
        # Job ids follow the commands' order (one admission at a time).
        step_of = {job_id: cases[i] for i, job_id in enumerate(sorted(thread_of))}
        for job_id, (_, step) in step_of.items():
            route = f"/channels/{thread_of[job_id]}/messages"
            if step == "downloaded":
                faults.append(discord.inject_rest_errors(503, None, route_contains=route, method="POST"))
            else:
                faults.append(discord.hold_rest(route, method="POST", after=step == "posted but not recorded"))

        def all_at_their_step() -> bool:
            return all(f.taken >= 1 and (f.kind == "error" or f.held == 1) for f in faults)

        await wait_until(all_at_their_step, within=60)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        posted_before = videos_per_job(discord)
        assert sorted(posted_before) == sorted(j for j, (_, s) in step_of.items() if s == "posted but not recorded")
        for fault in faults:
            if fault.kind == "error":
                fault.stop()  # Discord is fine again; the held requests belong to a dead process

        proc = await start_bot(tmp_path, discord, provider)

        async def all_final() -> bool:
            states = [JobState(str(r[0])) for r in await database._rows("SELECT state FROM jobs")]
            return len(states) == len(cases) and all(state.is_final for state in states)

        await wait_until(all_final, within=90, interval=0.2)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for fault in faults:
            fault.stop()
        await provider.stop()
        await discord.stop()

    store = await JobStore.open(tmp_path / "data" / "kf2v.sqlite3")
    try:
        jobs = {job.id: job for job in await store.all_jobs()}
        spend = await store.spend_by_guild()
    finally:
        await store.close()
    posts = videos_per_job(discord)
    assert {job_id: posts[job_id] for job_id in jobs} == dict.fromkeys(jobs, 1), posts  # every job delivered once
    assert [job.state for job in jobs.values()] == [JobState.DELIVERED] * len(cases)
    charged_without_video = [j.id for j in jobs.values() if j.charge_state is ChargeState.SETTLED and not posts[j.id]]
    assert charged_without_video == []
    for job_id, (size, step) in step_of.items():
        messages = [m for m in discord.messages(thread_of[job_id]) if m.embeds]
        files = [a for m in messages for a in m.attachments if a.filename == f"kf2v-{job_id}.mp4"]
        links = [m for m in messages if not m.attachments and provider.base_url.split("/api")[0] in m.content]
        if size == "fits":  # the boosted server's real limit, not a 10 MiB guess before the gateway sent it
            assert (len(files), len(links)) == (1, 0), (size, step)
        else:  # over the limit: the provider's link, which passes the video URL allow-list
            assert (len(files), len(links)) == (0, 1), (size, step)
    source = tmp_path / "data" / "kf2v.sqlite3"
    money = await check_ledger(source, billed=billed_by_task(provider), reported_spend=spend)
    assert money.problems == []
    assert delivery_problems(await job_states(source), posts, expected_jobs=len(cases)) == []
    print(
        f"\nRELIABILITY delivery-restart cases={len(cases)} delivered_once={len(jobs)} charged_without_video=0 "
        f"{money.summary()}"
    )


async def _has(found: Any, count: int) -> bool:
    return len(await found) >= count
