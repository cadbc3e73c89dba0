"""Admission (issue 10): image work bounded and only after the budget check, column-level policy updates,
a rate limiter that forgets idle users. Real SQLite files; the engine against the DashScope emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.catalog import load_catalog
from bot.dashscope.client import DashScopeClient
from bot.dashscope.errors import ForeignVideoUrlError
from bot.errors import InvalidInput, QueueFull, QuotaExceeded, RateLimited
from bot.jobs.quota import BudgetService, Defaults
from bot.jobs.service import UserRateLimiter
from bot.jobs.store import JobStore
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support import corpus
from tests.support.engine import draft, start_engine

FAST = {"pending_s": (0.05, 0.2), "running_s": (0.2, 0.5)}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    s = await JobStore.open(tmp_path / "data" / "kf2v.sqlite3")
    yield s
    await s.close()


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(seed=11, **FAST))  # type: ignore[arg-type]
    await emu.start()
    yield emu
    await emu.stop()


def frames_on_disk(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "media" / "frames").rglob("*") if p.is_file()]


# --- policy updates ------------------------------------------------------------------------------------
async def test_owner_and_manager_changes_made_at_once_both_stay(store: JobStore) -> None:
    budget = BudgetService(store, load_catalog(), Defaults(10_000, 100_000, 20, 3), ZoneInfo("UTC"), region="beijing")
    for round_ in range(1, 21):
        # An owner's budget change and a manager's member limits, started in the same instant: with a
        # read-modify-write of the whole row, the later write put the other field back.
        await asyncio.gather(
            budget.set_budgets(7, daily=round_ * 1000, monthly=None),
            budget.set_member_limits(7, member_daily_videos=round_, allowed_channels=(round_,)),
            budget.set_member_limits(7, user_queue_limit=round_),
        )
        policy = await store.get_policy(7)
        assert (policy.daily_budget, policy.member_daily_videos, policy.user_queue_limit, policy.allowed_channels) == (
            round_ * 1000,
            round_,
            round_,
            (round_,),
        ), round_
        assert policy.monthly_budget is None  # never given: still "the default"


async def test_a_stale_reader_cannot_revert_another_column(store: JobStore) -> None:
    await store.update_policy(3, daily_budget=5000, member_daily_videos=4)
    stale = await store.get_policy(3)  # a manager's view, read before the owner's change below
    assert stale.member_daily_videos == 4
    await store.update_policy(3, daily_budget=9000)
    updated = await store.update_policy(3, member_daily_videos=stale.member_daily_videos + 1)
    assert (updated.daily_budget, updated.member_daily_videos) == (9000, 5)
    assert await store.get_policy(3) == updated


async def test_channel_changes_made_at_once_all_stay(store: JobStore) -> None:
    budget = BudgetService(store, load_catalog(), Defaults(10_000, 100_000, 20, 3), ZoneInfo("UTC"), region="beijing")

    def allow(channel: int) -> Callable[[tuple[int, ...]], tuple[int, ...]]:
        return lambda current: (*current, channel)

    # Ten managers allow a channel each while an owner changes the budget and another manager the limits.
    await asyncio.gather(
        *(budget.set_member_limits(5, edit_channels=allow(c)) for c in range(1, 11)),
        budget.set_budgets(5, daily=4000, monthly=None),
        budget.set_member_limits(5, user_queue_limit=2),
    )
    policy = await store.get_policy(5)
    assert sorted(policy.allowed_channels) == list(range(1, 11))
    assert (policy.daily_budget, policy.user_queue_limit) == (4000, 2)

    def refuse(current: tuple[int, ...]) -> tuple[int, ...]:
        raise InvalidInput("quota.channel_not_listed", channel="<#99>")

    with pytest.raises(InvalidInput):
        await budget.set_member_limits(5, member_daily_videos=1, edit_channels=refuse)
    assert await store.get_policy(5) == policy  # a refused edit changes nothing, not even the other column


async def test_update_policy_accepts_only_policy_columns(store: JobStore) -> None:
    with pytest.raises(ValueError, match="not guild policy columns"):
        await store.update_policy(3, daily_budget=1, guild_id=4)
    with pytest.raises(ValueError, match="not guild policy columns"):
        await store.update_policy(3, edit_channels=None, **{"paused = 1; --": 1})
    fresh = await store.get_policy(3)  # the refused updates wrote nothing
    assert (fresh.daily_budget, fresh.paused, fresh.allowed_channels) == (None, False, ())


# --- the per-user rate limiter ---------------------------------------------------------------------------
def test_rate_limiter_forgets_idle_users_and_still_limits_active_ones() -> None:
    now = [0.0]
    limiter = UserRateLimiter(2, clock=lambda: now[0])
    for user in range(1000):
        limiter.hit(user)
    assert len(limiter) == 1000
    now[0] = 30.0
    limiter.hit(5)  # 5's second command in the window
    assert len(limiter) == 1000  # nobody is idle for a full window yet
    now[0] = 61.0
    limiter.hit(5)  # the command at 0 s has left 5's window
    assert len(limiter) == 1  # the 999 idle users are gone; only 5 (last seen at 30 s) stays
    now[0] = 62.0
    with pytest.raises(RateLimited):
        limiter.hit(5)  # 30 s and 61 s are inside the window: the limit still holds for the active user
    limiter.hit(7)
    limiter.hit(7)  # a forgotten user starts afresh
    with pytest.raises(RateLimited):
        limiter.hit(7)
    assert len(limiter) == 2


def test_rate_limiter_memory_follows_recent_users_only() -> None:
    now = [0.0]
    limiter = UserRateLimiter(6, clock=lambda: now[0])
    peak = 0
    for second in range(600):  # ten minutes, ten new users every second, each sending one command
        now[0] = float(second)
        for n in range(10):
            limiter.hit(second * 10 + n)
        peak = max(peak, len(limiter))
    # Every user ever seen is 6000; a sweep per window keeps at most two windows of them.
    assert peak <= 10 * 120
    assert len(limiter) <= 10 * 120


# --- image work --------------------------------------------------------------------------------------------
async def test_over_budget_is_refused_before_any_frame_is_decoded(tmp_path: Path, emulator: DashScopeEmulator) -> None:
    services, _ = await start_engine(tmp_path / "data", emulator.base_url, KF2V_DEFAULT_DAILY_BUDGET=0)
    try:
        workers = services.jobs.image_workers
        with pytest.raises(QuotaExceeded) as refused:
            await services.jobs.submit(draft(guild=1))
        assert refused.value.key == "quota.daily"
        assert workers.checked == 0  # refused on the budget alone: no decode, no re-encode
        assert await services.store.all_jobs() == [] and await services.store.ledger() == []
        assert frames_on_disk(tmp_path / "data") == []
        # A guild whose owners gave it a budget goes on to the image checks.
        await services.budget.set_budgets(2, daily=5000, monthly=None)
        job = await services.jobs.submit(draft(guild=2))
        assert workers.checked == 2 and job.guild_id == 2
    finally:
        await services.stop()
    assert emulator.stats()["calls"].get("create", 0) <= 1  # only guild 2's job can ever reach the provider


async def test_a_member_at_the_queue_limit_is_refused_before_decoding(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    services, _ = await start_engine(tmp_path / "data", emulator.base_url, KF2V_DEFAULT_USER_QUEUE_LIMIT=1)
    try:
        await services.jobs.pause("keep the first job queued")
        await services.jobs.submit(draft(user=10))
        workers = services.jobs.image_workers
        assert workers.checked == 2
        with pytest.raises(QueueFull):
            await services.jobs.submit(draft(user=10, prompt="a second one"))
        assert workers.checked == 2
        assert len(await services.store.all_jobs()) == 1
    finally:
        await services.stop()


async def test_frames_are_decoded_at_most_image_workers_at_a_time(tmp_path: Path, emulator: DashScopeEmulator) -> None:
    services, _ = await start_engine(tmp_path / "data", emulator.base_url, KF2V_IMAGE_WORKERS=2)
    try:
        await services.jobs.pause("count only")
        workers = services.jobs.image_workers
        assert workers.limit == 2  # KF2V_IMAGE_WORKERS reaches the service
        colours = [(i * 15, 255 - i * 15, 90) for i in range(16)]  # 16 different frames: none decoded before
        drafts = [
            draft(
                user=100 + i,
                first_image=corpus.good_png(1600, 1200, colours[i]),
                last_image=corpus.good_png(1600, 1200, colours[8 + i]),
            )
            for i in range(8)
        ]
        jobs = await asyncio.gather(*(services.jobs.submit(d) for d in drafts))
        assert len({j.id for j in jobs}) == 8
        assert workers.checked == 16
        assert 1 <= workers.peak <= 2 and workers.active == 0
    finally:
        await services.stop()


# --- wiring ------------------------------------------------------------------------------------------------
async def test_settings_reach_the_provider_clients_and_the_worker(tmp_path: Path, emulator: DashScopeEmulator) -> None:
    services, _ = await start_engine(
        tmp_path / "data",
        emulator.base_url,
        KF2V_VIDEO_URL_HOSTS="videos.example.com",
        KF2V_POLL_TARGET_DELAY=0.3,
        KF2V_MAX_VIDEO_BYTES=2 * 1024 * 1024,
    )
    try:
        (client,) = services.worker.clients.values()
        assert isinstance(client, DashScopeClient)
        client.check_video_url("https://videos.example.com/out.mp4")  # KF2V_VIDEO_URL_HOSTS: allowed
        client.check_video_url("https://bucket.oss-cn-beijing.aliyuncs.com/out.mp4")  # the provider's storage
        with pytest.raises(ForeignVideoUrlError):
            client.check_video_url("https://elsewhere.example.com/out.mp4")
        config = services.worker.config
        assert (config.detection_target_s, config.max_video_bytes) == (0.3, 2 * 1024 * 1024)
    finally:
        await services.stop()
