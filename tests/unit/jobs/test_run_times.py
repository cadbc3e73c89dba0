"""The poll planner's run-time priors (bot/run_times.py) and what it learns, kept across a restart (issue 18,
item 8). The speed they buy is measured by `python -m bench polling` (its cold-start run), not here."""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.catalog import DEFAULT_CATALOG, load_catalog
from bot.jobs.models import JobState
from bot.jobs.scheduler import TRUST_SAMPLES, AccountLimits, DurationModel, Scheduler
from bot.jobs.worker.polling import window_gap
from bot.run_times import FALLBACK, RUN_TIME_PRIORS, RunTimePriors
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support.engine import all_final, draft, start_engine
from tests.support.waiting import wait_until

FAST = {"pending_s": (0.05, 0.1), "running_s": (0.3, 0.4)}


def test_every_built_in_model_has_a_prior_with_a_named_source() -> None:
    priors = RunTimePriors()
    catalog = load_catalog()
    for key, spec in catalog.models.items():
        for resolution in spec.resolutions:
            for duration in (spec.duration_range[0], spec.default_duration, spec.duration_range[1]):
                prior = priors.lookup(key, resolution, duration)
                assert prior is not FALLBACK, (key, resolution, duration)
                assert prior.source in RUN_TIME_PRIORS["sources"], prior.source
    assert set(DEFAULT_CATALOG["models"]) <= {row["model"] for row in RUN_TIME_PRIORS["tiers"]}


def test_the_most_specific_row_wins_and_time_can_be_compressed() -> None:
    priors = RunTimePriors(
        {
            "sources": {"observed": "here"},
            "tiers": [
                {
                    "model": "m",
                    "resolution": "*",
                    "duration": "*",
                    "queued_mean_s": 10,
                    "running_s": [100, 200],
                    "source": "observed",
                },
                {
                    "model": "m",
                    "resolution": "1080P",
                    "duration": 15,
                    "queued_mean_s": 20,
                    "running_s": [300, 500],
                    "source": "observed",
                },
            ],
        }
    )
    assert priors.lookup("m", "1080P", 15).running_s == (300, 500)
    assert priors.lookup("m", "720P", 15).running_s == (100, 200)
    assert priors.lookup("m", "1080P", 5).running_s == (100, 200)
    assert priors.lookup("other", "720P", 5) is FALLBACK
    fast = priors.compressed(100).lookup("m", "1080P", 15)
    assert fast.running_s == (3, 5) and fast.queued_mean_s == pytest.approx(0.2)
    with pytest.raises(ValueError, match="not a range"):
        RunTimePriors({"tiers": [{"model": "m", "resolution": "*", "duration": "*", "queued_mean_s": 1,
                                  "running_s": [9, 3], "source": "x"}]})  # fmt: skip


def test_a_cold_tier_plans_from_its_prior_then_from_what_it_sees() -> None:
    scheduler = Scheduler(AccountLimits(["a"], {}))
    flash = scheduler.durations_for("wan2.2-kf2v-flash", "720P", 5)
    assert flash.running_bounds() == (240, 360)  # the observed range from the first task on
    assert flash.mean_running == 300 and flash.mean_queued == 75
    # Early samples widen the window, never narrow it below the prior (a bunched few would miss later tasks).
    flash.observe(10, 300)
    flash.observe(10, 302)
    assert flash.running_bounds() == (240, 360)
    flash.observe(10, 380)
    assert flash.running_bounds()[1] > 380
    # Once enough are seen, the tier's own samples decide (here: a provider faster than the prior).
    fast = DurationModel.from_prior(scheduler.priors.lookup("wan2.2-kf2v-flash", "720P", 5))
    for i in range(TRUST_SAMPLES):
        fast.observe(5, 100 + i)
    low, high = fast.running_bounds()
    assert 98 < low < 100 and 107 < high < 109
    # Each (model, resolution, duration) learns apart: wan2.7 at 15 s is not wan2.7 at 2 s.
    assert scheduler.durations_for("wan2.7-i2v", "1080P", 15) is not scheduler.durations_for("wan2.7-i2v", "1080P", 2)


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(seed=5, **FAST))  # type: ignore[arg-type]
    await emu.start()
    yield emu
    await emu.stop()


async def test_what_the_planner_learnt_survives_a_restart(
    tmp_path: Path, emulator: DashScopeEmulator, store_env: dict[str, Any]
) -> None:
    services, _ = await start_engine(tmp_path, emulator.base_url, **store_env)
    try:
        jobs = [await services.jobs.submit(draft(guild=1, user=10 + i)) for i in range(3)]
        await wait_until(lambda: all_final(services, [j.id for j in jobs]), within=60)
        for job in jobs:
            done = await services.store.get(job.id)
            assert done is not None and done.state is JobState.DELIVERED
        tier = (jobs[0].request.model, jobs[0].request.resolution, jobs[0].request.duration)
        learnt = list(services.scheduler.durations_for(*tier).running)
        assert len(learnt) == 3 and all(0.2 < r < 0.6 for r in learnt), learnt  # the emulator's 0.3-0.4 s
        assert (await services.store.run_times())[tier] == list(
            zip(services.scheduler.durations_for(*tier).queued, learnt, strict=True)
        )
    finally:
        await services.stop()
    # A new process on the same database: nothing in flight, yet the tier starts from what was learnt (on
    # PostgreSQL once this process holds the dispatcher lease and its worker has recovered).
    services, _ = await start_engine(tmp_path, emulator.base_url, **store_env)
    try:
        stats = services.scheduler.durations_for(*tier)
        await wait_until(lambda: bool(stats.running), within=30)
        assert stats.running == pytest.approx(learnt)
        cold = DurationModel.from_prior(services.scheduler.priors.lookup(*tier))
        assert stats.running_bounds() != cold.running_bounds()
    finally:
        await services.stop()


async def test_the_store_keeps_the_latest_runs_per_tier(tmp_path: Path, store_env: dict[str, Any]) -> None:
    emulator_url = "http://127.0.0.1:9"  # never contacted: nothing is submitted
    services, _ = await start_engine(tmp_path, emulator_url, **store_env)
    try:
        store = services.store
        for i in range(7):
            await store.add_run_time("m", "720P", 5, float(i), 100.0 + i, keep=4)
        await store.add_run_time("m", "720P", None, 1.0, 50.0, keep=4)
        kept = await store.run_times()
        assert kept[("m", "720P", 5)] == [(3.0, 103.0), (4.0, 104.0), (5.0, 105.0), (6.0, 106.0)]
        assert kept[("m", "720P", None)] == [(1.0, 50.0)]
    finally:
        await services.stop()


def test_window_gaps_shrink_toward_the_end_and_keep_the_mean_delay() -> None:
    """Polls at t_k+1 = t_k + window_gap(t_k) over a 120 s window with a 4.5 s gap: for finishes spread evenly,
    fewer polls until the finish is seen than every 4.5 s, the same mean delay (about 2.3 s), a lower median."""
    start, end, gap = 1000.0, 1120.0, 4.5
    assert window_gap(start, start, end, gap, 1.0) == pytest.approx(6.75)
    assert window_gap(start + 90, start, end, gap, 1.0) == pytest.approx(6.75 / 2)
    assert window_gap(end - 0.1, start, end, gap, 1.0) == 1.0  # never under the minimum
    assert window_gap(start, start, start + 3, gap, 1.0) == gap  # a narrow window: the steady gap
    polls = [start]
    while polls[-1] < end:
        polls.append(polls[-1] + window_gap(polls[-1], start, end, gap, 0.5))
    steady = [start + gap * k for k in range(int((end - start) / gap) + 2)]

    finishes = [start + 0.01 + i * 0.1 for i in range(1199)]  # evenly over the window

    def delays(times: list[float]) -> list[float]:
        return [next(t for t in times if t >= f) - f for f in finishes]

    def polls_made(times: list[float]) -> float:
        """Polls in the window until the one that sees the finish, on average over the finishes."""
        return statistics.fmean(sum(1 for t in times if start < t < f) + 1 for f in finishes)

    shrinking, even = delays(polls), delays(steady)
    assert polls_made(polls) < 0.95 * polls_made(steady)
    assert statistics.fmean(shrinking) == pytest.approx(statistics.fmean(even), abs=0.1)
    assert statistics.median(shrinking) < statistics.median(even) - 0.1
