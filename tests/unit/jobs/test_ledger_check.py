"""The campaigns' independent ledger check (tests/support/ledger_check.py) passes a clean run and names each
way money can go wrong, on a real engine's SQLite file then altered behind the bot's back."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support.engine import all_final, draft, start_engine
from tests.support.ledger_check import billed_by_task, check_ledger, delivery_problems, job_states, price_milli
from tests.support.waiting import wait_until


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    emu = DashScopeEmulator(EmulatorConfig(seed=4, pending_s=(0.05, 0.1), running_s=(0.1, 0.3)))
    await emu.start()
    yield emu
    await emu.stop()


def alter(path: Path, sql: str, job_id: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, (job_id,))


async def test_a_clean_run_passes_and_every_kind_of_wrong_money_is_named(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    services, recorder = await start_engine(tmp_path, emulator.base_url)
    try:
        ids = [(await services.jobs.submit(draft(user=u, guild=1 + u % 2))).id for u in range(3)]
        await wait_until(lambda: all_final(services, ids), within=30)
        spend = await services.store.spend_by_guild()
    finally:
        await services.stop()
    path = tmp_path / "kf2v.sqlite3"
    billed = billed_by_task(emulator)
    clean = await check_ledger(path, billed=billed, reported_spend=spend)
    assert clean.problems == [] and (clean.jobs, clean.settled, clean.released) == (3, 3, 0)
    assert clean.settled_milli == 3 * price_milli("wan2.2-kf2v-flash", "480P", 5)
    posts = Counter(job_id for job_id, _ in recorder.delivered)
    assert delivery_problems(await job_states(path), posts, expected_jobs=3) == []
    assert delivery_problems(await job_states(path), posts + Counter({ids[0]: 1})) == [
        f"job {ids[0]} (delivered) posted 2 times"
    ]

    alter(path, "UPDATE jobs SET cost_settled = cost_settled - 1 WHERE id = ?", ids[0])
    alter(path, "UPDATE jobs SET state = 'failed' WHERE id = ?", ids[1])
    alter(path, "UPDATE jobs SET charge_state = 'reserved' WHERE id = ?", ids[2])
    problems = (await check_ledger(path, billed=billed, reported_spend=spend)).problems
    assert any(f"job {ids[0]}: charged" in p and "catalog's price" in p for p in problems), problems
    assert any(f"job {ids[0]}: settled" in p and "ledger says" in p for p in problems), problems
    assert any(f"job {ids[1]} was charged" in p and "money without a video" in p for p in problems), problems
    assert any(f"job {ids[2]} (delivered) still holds its reservation" in p for p in problems), problems
    assert any("the bot reports spend" in p for p in problems), problems
    # A task the provider never billed (as if the bot settled a job whose task failed).
    unbilled = {task: ("FAILED", None) for task in billed}
    assert any("which the provider shows FAILED" in p for p in (await check_ledger(path, billed=unbilled)).problems)
