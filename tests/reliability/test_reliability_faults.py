"""Fault campaigns end to end: the real bot (discord.py) between the Discord and the DashScope emulators.

Provider side: 500/503 at 20 %, throttle bursts, latency, dropped connections and malformed JSON, all at
once over ~10 jobs. Discord side: 429s and 5xx on the bot's REST calls, a gateway disconnect and resume,
an upload refused as too large (413 / 40005), a channel deleted while its job runs, thread permissions
taken away mid-job. Each ends with every job delivered or failed with its specific message in the thread,
nothing stuck once the faults stop, and the retries counted and bounded.

Each test prints one `RELIABILITY ...` line (pytest -s) for the table in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from bot.i18n import t
from bot.jobs.models import ChargeState, Job, JobState
from sandbox.dashscope_emulator import EmulatorConfig
from sandbox.discord_emu.model import Overwrite, Perm
from tests.support.ledger_check import check_services
from tests.support.reliability import FINAL, videos_per_job
from tests.support.waiting import wait_until
from tests.support.world import ALICE, BOB, World

pytestmark = pytest.mark.slow


@pytest.fixture
def world_settings() -> dict[str, Any]:
    """This module's world: see tests/conftest.py."""
    return {"emulator": EmulatorConfig(seed=41, pending_s=(0.1, 0.3), running_s=(0.2, 0.6))}


async def submit(world: World, prompt: str, user: int = ALICE, **options: Any) -> Job:
    """/kf2v through Discord; returns the job once the user was told it is queued."""
    before = {j.id for j in await world.svc.store.all_jobs()}
    record = await world.kf2v(user=user, prompt=prompt, resolution="480P", **options)
    text = await world.reply(record, within=30)
    assert "queued" in text, text
    jobs = [j for j in await world.svc.store.all_jobs() if j.id not in before]
    assert len(jobs) == 1
    return jobs[0]


async def settle(world: World, jobs: list[Job], within: float) -> list[Job]:
    async def done() -> bool:
        states = [(await world.job(j.id)).state for j in jobs]
        return all(state in FINAL for state in states)

    await wait_until(done, within=within, interval=0.1)
    return [await world.job(j.id) for j in jobs]


def thread_texts(world: World, job: Job) -> list[str]:
    where = job.thread_id or job.channel_id
    return [m.content for m in world.discord.messages(where)]


def assert_outcome_explained(world: World, jobs: list[Job]) -> Counter[str]:
    """Delivered exactly once, or failed with the reason's own words in the thread. Returns outcome counts."""
    posts = videos_per_job(world.discord)
    outcomes: Counter[str] = Counter()
    for job in jobs:
        if job.state is JobState.DELIVERED:
            assert posts[job.id] == 1, (job.id, posts)
            assert job.charge_state is ChargeState.SETTLED
        else:
            assert job.state is JobState.FAILED and job.error_key, job
            assert posts[job.id] == 0
            reason = t("en-US", job.error_key)
            assert any(reason in text for text in thread_texts(world, job)), (job.error_key, thread_texts(world, job))
        outcomes[job.state.value if job.state is JobState.DELIVERED else f"failed:{job.error_code}"] += 1
    return outcomes


PROVIDER_JOBS = 10


async def test_provider_faults_all_at_once(world: World) -> None:
    dashscope = world.dashscope
    everywhere = frozenset({"create", "get", "list", "cancel", "video"})
    dashscope.update(error_rate=0.2, latency_s=0.05, drop_rate=0.08, malformed_rate=0.08, routes=everywhere)

    async def bursts() -> None:
        """A throttle burst; a stretch where most answers are lost (the created task exists at the provider
        but the bot never hears its id: reconciled through the task list, never resubmitted) until both kinds
        of loss were seen and reconciled; another throttle burst; then the base rates for a while."""
        await asyncio.sleep(1.0)
        dashscope.update(throttle_rate=0.7)
        await asyncio.sleep(1.5)
        dashscope.update(throttle_rate=0.0, drop_rate=0.3, malformed_rate=0.3)

        def lost_and_reconciled() -> bool:
            stats = dashscope.stats()
            seen: list[int] = [stats["faults"]["drop"], stats["faults"]["malformed"], stats["calls"]["list"]]
            return min(seen) > 0

        await wait_until(lost_and_reconciled, within=20, interval=0.05)
        dashscope.update(drop_rate=0.08, malformed_rate=0.08, throttle_rate=0.7)
        await asyncio.sleep(1.5)
        dashscope.update(throttle_rate=0.0)
        await asyncio.sleep(2.0)

    trouble = asyncio.create_task(bursts())
    jobs = [await submit(world, f"fault campaign {i}", user=(ALICE, BOB)[i % 2]) for i in range(PROVIDER_JOBS)]
    await trouble
    dashscope.update(error_rate=0.0, latency_s=0.0, drop_rate=0.0, malformed_rate=0.0, throttle_rate=0.0)
    jobs = await settle(world, jobs, within=60)  # nothing stuck once the faults stop

    outcomes = assert_outcome_explained(world, jobs)
    stats = dashscope.stats()
    with_task = [j for j in jobs if j.task_id]
    assert stats["submissions_accepted"] == len(with_task), "a job was submitted twice"
    assert stats["violations"] == [], "the bot broke the account limits"
    # Retries are bounded: per job at most max_submit_attempts creates plus the throttled ones (which cool
    # the lane down exponentially), polls well under one per poll_min_interval, a few downloads.
    calls = stats["calls"]
    cfg = world.svc.worker.config
    assert calls["create"] <= len(jobs) * cfg.max_submit_attempts + stats["faults"]["throttle"]
    assert max(task["polls"] for task in stats["tasks"]) <= 60
    assert calls["video"] <= len(jobs) * cfg.max_delivery_attempts
    # Every fault injected is temporary: every job is delivered, none failed.
    assert outcomes == Counter({"delivered": len(jobs)}), outcomes
    assert all(stats["faults"][kind] > 0 for kind in ("error", "throttle", "drop", "malformed", "latency"))
    assert calls["list"] > 0, "no lost create was reconciled"
    money = await check_services(world.svc, dashscope, videos_per_job(world.discord), expected_jobs=len(jobs))
    assert money.problems == []
    print(
        f"\nRELIABILITY provider-faults jobs={len(jobs)} outcomes={dict(outcomes)} faults={stats['faults']} "
        f"calls={calls} duplicate_submissions={stats['submissions_accepted'] - len(with_task)} "
        f"duplicate_deliveries=0 stuck=0 {money.summary()}"
    )


async def at_provider(world: World, job: Job) -> None:
    async def there() -> bool:
        return (await world.job(job.id)).state in (JobState.PENDING, JobState.RUNNING)

    await wait_until(there, within=15)


async def test_discord_429_5xx_and_a_gateway_resume(world: World) -> None:
    discord = world.discord
    discord.rate_limit = (1000, 1.0)
    world.dashscope.update(pending_s=(1.0, 1.0))
    first = await submit(world, "rest trouble")
    await at_provider(world, first)
    start = len(discord.requests)
    # The video post meets two 429s (discord.py waits and retries), one 500 (discord.py retries after 1 s)
    # and two 503s (not retried by discord.py: the worker's delivery retry takes over). Status edits meet 429s.
    discord.inject_rest_errors(429, 2, "/channels/", method="POST", retry_after=0.2)
    discord.inject_rest_errors(500, 1, "/channels/", method="POST")
    discord.inject_rest_errors(503, 2, "/channels/", method="POST")
    discord.inject_rest_errors(429, 3, "/messages/", method="PATCH", retry_after=0.2)
    first = (await settle(world, [first], within=30))[0]
    assert first.state is JobState.DELIVERED and first.delivery_attempts == 2, first

    # A gateway disconnect while the next job runs: discord.py resumes, the job lands, commands still work.
    second = await submit(world, "gateway trouble")
    await at_provider(world, second)
    connects = len(discord.events_of("gateway.connect"))
    await discord.disconnect_gateway(resume=True)
    await discord.wait_for(discord.gateway.has_live_session, 15)
    assert len(discord.events_of("gateway.connect")) == connects + 1
    third = await submit(world, "after the resume", user=BOB)
    jobs = await settle(world, [first, second, third], within=30)
    outcomes = assert_outcome_explained(world, jobs)
    assert outcomes == Counter({"delivered": 3})
    faults = Counter(e.data["status"] for e in discord.events_of("rest.fault"))
    assert faults == Counter({429: 5, 500: 1, 503: 2})
    # Retries bounded: every request beyond the ones that succeeded is one of the injected faults.
    since = discord.requests[start:]
    failed = [r for r in since if r.status >= 300]
    assert Counter(r.status for r in failed) == faults, [(r.method, r.path, r.status) for r in failed]
    assert discord.count_requests(status=401) == 0 and discord.count_requests(status=403) == 0
    money = await check_services(world.svc, world.dashscope, videos_per_job(discord), expected_jobs=3)
    assert money.problems == []
    print(
        f"\nRELIABILITY discord-faults jobs={len(jobs)} outcomes={dict(outcomes)} injected={dict(faults)} "
        f"resumes={sum(1 for e in discord.events_of('gateway.fault'))} duplicate_deliveries=0 {money.summary()}"
    )


async def test_upload_refused_as_too_large_falls_back_to_a_link(world: World) -> None:
    discord = world.discord
    # The bot believes the guild is boosted (50 MiB uploads) but Discord refuses anything over 10 MiB.
    discord.set_premium_tier(world.guild, 2)
    bot = world.bot
    assert bot is not None
    await wait_until(lambda: (g := bot.get_guild(world.guild)) is not None and g.premium_tier == 2, within=10)
    discord.guild(world.guild).premium_tier = 0
    world.dashscope.update(video_min_bytes=11 * 1024 * 1024)
    job = await submit(world, "too big to upload")
    job = (await settle(world, [job], within=40))[0]
    assert job.state is JobState.DELIVERED
    refused = discord.count_requests("POST", "/channels/", status=413)
    assert refused == 1, refused
    links = [m for m in discord.messages(job.thread_id or 0) if "larger than this server allows" in m.content]
    assert len(links) == 1 and "http://127.0.0.1" in links[0].content
    assert world.videos() == []
    money = await check_services(world.svc, world.dashscope, videos_per_job(discord), expected_jobs=1)
    assert money.problems == []
    print(f"\nRELIABILITY upload-413 refused={refused} link_posted=1 delivered=1 {money.summary()}")


async def test_channel_deleted_while_its_job_runs(world: World) -> None:
    discord = world.discord
    doomed = discord.add_text_channel(world.guild, "doomed")
    world.dashscope.update(pending_s=(1.0, 1.0))
    job = await submit(world, "the channel will vanish", channel=doomed)
    other = await submit(world, "this one is fine", user=BOB)
    await at_provider(world, job)
    discord.delete_channel(doomed)
    requests_before = len(discord.requests)
    job, other = await settle(world, [job, other], within=30)
    assert job.state is JobState.FAILED and job.error_key == "job.failed.undeliverable", job
    assert job.charge_state is ChargeState.RELEASED  # nobody could see the video: the guild is not charged
    assert other.state is JobState.DELIVERED
    await asyncio.sleep(1.0)  # a crash loop would keep calling Discord about the dead channel
    dead = {doomed, job.thread_id}
    calls = [r for r in discord.requests[requests_before:] if any(str(c) in r.path for c in dead if c)]
    assert len(calls) <= 8, [(r.method, r.path, r.status) for r in calls]
    # The requester can still learn what happened, in their own /kf2v-jobs.
    record = await discord.run_command(world.guild, world.channel, ALICE, "kf2v-jobs")
    text = await world.reply(record)
    assert f"#{job.id}** Failed" in text
    after = await submit(world, "the bot carries on")
    assert (await settle(world, [after], within=20))[0].state is JobState.DELIVERED
    money = await check_services(world.svc, world.dashscope, videos_per_job(discord), expected_jobs=3)
    assert money.problems == []
    print(f"\nRELIABILITY channel-deleted outcome=failed,released calls_after_delete={len(calls)} {money.summary()}")


async def test_thread_permission_taken_away_mid_job(world: World) -> None:
    discord = world.discord
    world.dashscope.update(pending_s=(1.0, 1.0))
    job = await submit(world, "the thread closes to the bot")
    await at_provider(world, job)
    channel = discord.channel(world.channel)
    channel.overwrites[discord.bot_user_id] = Overwrite(discord.bot_user_id, 1, 0, Perm.SEND_MESSAGES_IN_THREADS)
    discord.gateway.dispatch(
        "CHANNEL_UPDATE", discord.channel_payload(channel), guild_id=world.guild, intent=1
    )  # fmt: skip
    job = (await settle(world, [job], within=30))[0]
    denied = discord.count_requests("POST", "/channels/", status=403)
    # Posted where it still can: the job's channel (the thread refused once).
    assert job.state is JobState.DELIVERED, job
    assert videos_per_job(discord)[job.id] == 1
    assert [m.channel_id for m, _ in world.videos()] == [world.channel]
    assert denied == 1, denied
    money = await check_services(world.svc, world.dashscope, videos_per_job(discord), expected_jobs=1)
    assert money.problems == []
    print(f"\nRELIABILITY thread-permission outcome={job.state.value} forbidden_posts={denied} {money.summary()}")
