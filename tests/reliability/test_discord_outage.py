"""Discord down for half an hour, then refusing the bot (403) in the jobs' threads and channel, then back: every
finished video waits on disk and is posted once Discord takes it; nothing fails, nobody pays for a video not shown.

Time is compressed through the settings, not slept: the delivery back-off's cap is 0.05 s instead of 30 s (600x),
so 3 s of outage are 30 minutes of the real schedule (~60 attempts per video, against the 8 that failed a job
before). The faults are Discord's own answers at the REST edge of the emulator (503, then 403 code 50013).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from bot.jobs.models import ChargeState, Job, JobState
from bot.jobs.worker import WorkerConfig
from sandbox.dashscope_emulator import EmulatorConfig
from tests.support.ledger_check import billed_by_task, check_ledger, check_services
from tests.support.reliability import videos_per_job
from tests.support.waiting import wait_until
from tests.support.world import ALICE, BOB, OWNER, World

DEFAULTS = WorkerConfig()
CAP_S = 0.05  # the back-off cap under test; the default is 30 s
COMPRESSION = DEFAULTS.delivery_backoff_max_s / CAP_S
OUTAGE_MINUTES = 30
JOBS = 4


@pytest.fixture
def world_settings() -> dict[str, Any]:
    """This module's world: see tests/conftest.py."""
    return {"emulator": EmulatorConfig(seed=17, pending_s=(0.1, 0.2), running_s=(0.3, 0.5))}


async def jobs_of(world: World, ids: list[int]) -> list[Job]:
    return [await world.job(job_id) for job_id in ids]


async def test_discord_503_for_30_minutes_then_403_then_recovery(world: World) -> None:
    discord = world.discord
    world.svc.worker.config = replace(world.svc.worker.config, delivery_backoff_s=0.01, delivery_backoff_max_s=CAP_S)
    ids: list[int] = []
    for i in range(JOBS):
        await world.reply(await world.kf2v(user=(ALICE, BOB)[i % 2], prompt=f"outage {i}", resolution="480P"))
        ids.append((await world.latest_job()).id)

    async def threads_made() -> bool:
        return all(job.thread_id for job in await jobs_of(world, ids))

    await wait_until(threads_made, within=30)
    # Discord's REST API answers 503 to every post (the videos, the owners' DMs alike).
    outage = discord.inject_rest_errors(503, None, route_contains="/messages", method="POST")

    async def all_made() -> bool:
        return all(job.state is JobState.SUCCEEDED for job in await jobs_of(world, ids))

    await wait_until(all_made, within=30)
    await asyncio.sleep(OUTAGE_MINUTES * 60 / COMPRESSION)
    waiting = await jobs_of(world, ids)
    assert [job.state for job in waiting] == [JobState.SUCCEEDED] * JOBS  # kept, not failed
    assert min(job.delivery_attempts for job in waiting) > DEFAULTS.max_delivery_attempts, waiting
    assert all(world.svc.media.video_path(job_id).exists() for job_id in ids)
    outage.stop()

    # Back, but the bot lost its permissions in the threads and the channel: the videos keep waiting, the owners
    # and the guild's owner are told once what to grant.
    where = [job.thread_id or 0 for job in waiting] + [world.channel]
    forbidden = [
        discord.inject_rest_errors(403, None, route_contains=f"/channels/{channel}/messages", method="POST", code=50013)
        for channel in where
    ]
    await wait_until(lambda: sum(f.taken for f in forbidden) >= 3 * JOBS, within=30)
    assert [job.state for job in await jobs_of(world, ids)] == [JobState.SUCCEEDED] * JOBS
    recovered_at = time.monotonic()
    for fault in forbidden:
        fault.stop()

    async def all_delivered() -> bool:
        return all(job.state is JobState.DELIVERED for job in await jobs_of(world, ids))

    await wait_until(all_delivered, within=30)
    recovery_s = time.monotonic() - recovered_at
    final = await jobs_of(world, ids)
    posts = videos_per_job(discord)
    assert [posts[job_id] for job_id in ids] == [1] * JOBS  # every video delivered once
    failed = [job for job in final if job.state is JobState.FAILED]
    charged_without_video = [j for j in final if j.charge_state is ChargeState.SETTLED and posts[j.id] == 0]
    assert failed == [] and charged_without_video == []
    guild_owner = discord.guild(world.guild).owner_id
    for person in (OWNER, guild_owner):
        told = [m.content for m in discord.dms(person) if "Send Messages in Threads" in m.content]
        assert len(told) == 1, (person, [m.content for m in discord.dms(person)])
    attempts = sum(job.delivery_attempts for job in final)
    money = await check_services(world.svc, world.dashscope, posts, expected_jobs=JOBS)
    assert money.problems == []
    print(
        f"\nRELIABILITY discord-outage 503={outage.taken} 403={sum(f.taken for f in forbidden)} "
        f"delivered={len(ids)}/{JOBS} failed=0 charged_without_video=0 attempts={attempts} "
        f"from_recovery_to_all_posted={recovery_s:.2f}s (back-off cap {CAP_S}s; 30s by default) {money.summary()}"
    )


async def test_redeliver_posts_a_waiting_video_now_and_a_delivered_one_again(world: World) -> None:
    discord = world.discord
    # A long back-off: after one refused post the video would wait 30-60 s for its next try.
    world.svc.worker.config = replace(world.svc.worker.config, delivery_backoff_s=60.0, delivery_backoff_max_s=60.0)
    await world.reply(await world.kf2v(prompt="redeliver me", resolution="480P"))
    job = await world.latest_job()
    await wait_until(lambda: _thread_of(world, job.id), within=30)
    thread = (await world.job(job.id)).thread_id or 0
    refused = discord.inject_rest_errors(503, 1, route_contains=f"/channels/{thread}/messages", method="POST")
    await wait_until(lambda: refused.taken == 1, within=30)
    assert (await world.job(job.id)).state is JobState.SUCCEEDED
    now = await discord.run_command(world.guild, world.channel, OWNER, "kf2v-admin", {"job_id": job.id},
                                    subcommand="redeliver")  # fmt: skip
    assert "posting its video now" in await world.reply(now)

    async def delivered() -> bool:
        return (await world.job(job.id)).state is JobState.DELIVERED

    await wait_until(delivered, within=20)  # long before the 30-60 s back-off
    again = await discord.run_command(world.guild, world.channel, OWNER, "kf2v-admin", {"job_id": job.id},
                                      subcommand="redeliver")  # fmt: skip
    assert "posted again" in await world.reply(again)
    assert videos_per_job(discord)[job.id] == 2
    assert (await world.job(job.id)).charge_state is ChargeState.SETTLED  # charged once, posted twice


async def test_a_video_gone_for_good_is_not_charged(world: World) -> None:
    """The mp4 removed from disk while Discord refused it, and the provider no longer has the task: nothing can
    be posted, so the job fails with its money given back."""
    discord = world.discord
    world.svc.worker.config = replace(world.svc.worker.config, delivery_backoff_s=0.2, delivery_backoff_max_s=0.2)
    await world.reply(await world.kf2v(prompt="lost for good", resolution="480P"))
    job = await world.latest_job()
    await wait_until(lambda: _thread_of(world, job.id), within=30)
    thread = (await world.job(job.id)).thread_id or 0
    outage = discord.inject_rest_errors(503, None, route_contains=f"/channels/{thread}/messages", method="POST")
    await wait_until(lambda: outage.taken >= 1, within=30)
    world.dashscope.update(task_ttl_s=0.001)  # the provider forgets its tasks (their 24 h are over)
    world.svc.media.video_path(job.id).unlink()

    async def failed() -> bool:
        return (await world.job(job.id)).state is JobState.FAILED

    await wait_until(failed, within=20)
    outage.stop()
    final = await world.job(job.id)
    assert final.error_key == "job.failed.video_lost" and final.charge_state is ChargeState.RELEASED
    ledger = [(e.kind, e.amount) for e in await world.svc.store.ledger(world.guild) if e.job_id == job.id]
    assert ledger == [("reserve", final.cost_reserved), ("settle", 500), ("release", 500)], ledger
    database = world.tmp / "data" / "kf2v.sqlite3"
    report = await check_ledger(database, billed=billed_by_task(world.dashscope), reported_spend={})
    assert report.problems == [] and (report.released, report.settled) == (1, 0), report


async def _thread_of(world: World, job_id: int) -> bool:
    return bool((await world.job(job_id)).thread_id)


async def test_a_post_whose_answer_is_lost_is_not_posted_twice(world: World) -> None:
    """Discord stores the video's post, then the connection drops before the answer: the bot retries, finds its
    own post in the thread (the marker) and records the delivery without posting it again."""
    discord = world.discord
    world.svc.worker.config = replace(world.svc.worker.config, delivery_backoff_s=0.05, delivery_backoff_max_s=0.1)
    await world.reply(await world.kf2v(prompt="answer lost", resolution="480P"))
    job = await world.latest_job()
    await wait_until(lambda: _thread_of(world, job.id), within=30)
    thread = (await world.job(job.id)).thread_id or 0
    dropped = discord.drop_rest(f"/channels/{thread}/messages", method="POST", after=True)

    async def delivered() -> bool:
        return (await world.job(job.id)).state is JobState.DELIVERED

    await wait_until(delivered, within=30)
    assert dropped.taken == 1
    assert videos_per_job(discord)[job.id] == 1
    notifier = world.svc.notifier
    inner = getattr(notifier, "inner", notifier)
    await wait_until(lambda: job.id not in getattr(inner, "_flushers", {}), within=10)  # per-job state pruned
