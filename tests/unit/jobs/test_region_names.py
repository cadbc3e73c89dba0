"""Names move and queries are counted (issue 18): a task-list row may carry another spelling of the model than
the one sent, and list pages count against the account's 20 queries/s like polls. Real SQLite, real aiohttp to
the DashScope emulator, which lists tasks under the other spelling and answers 429 past its query rate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.jobs.models import JobState
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig
from tests.support.engine import all_final, draft, start_engine
from tests.support.waiting import wait_until

PLUS = "wanx2.1-kf2v-plus"  # sent as such in Beijing; Singapore's (and newer pages') spelling is wan2.1-kf2v-plus


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    config = EmulatorConfig(
        seed=11,
        pending_s=(0.05, 0.2),
        running_s=(0.2, 0.5),
        listed_model_names={PLUS: "wan2.1-kf2v-plus"},
        query_qps=3,  # polls and list pages per account and second, past which the sandbox answers 429
    )
    emu = DashScopeEmulator(config)
    await emu.start()
    yield emu
    await emu.stop()


async def test_a_lost_create_is_found_under_the_other_spelling_and_list_pages_wait_for_the_query_gate(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    emulator.update(lose_create_answer_rate=1.0)
    services, _ = await start_engine(tmp_path, emulator.base_url)
    # Two queries a second per account, under the sandbox's three: list pages must take their turn with polls.
    services.worker.config = replace(services.worker.config, polls_per_second_per_account=2.0)
    try:
        job = await services.jobs.submit(draft(model=PLUS, resolution="720P", prompt="a lantern drifts up"))
        await wait_until(lambda: emulator.stats()["faults"]["lost_create_answer"] >= 1, within=30)
        emulator.update(lose_create_answer_rate=0.0)
        await wait_until(lambda: all_final(services, [job.id]), within=60)
        done = await services.store.get(job.id)
        assert done is not None and done.state is JobState.DELIVERED
        stats = emulator.stats()
        # Adopted, not sent twice: the row said wan2.1-kf2v-plus for a task sent as wanx2.1-kf2v-plus.
        assert stats["submissions_accepted"] == 1 and [t["task_id"] for t in stats["tasks"]] == [done.task_id]
        assert services.worker.counters["reconciled"] == 1
        assert services.worker.counters["lost_creates_requeued"] == 0
        assert stats["calls"]["list"] >= 4  # both spellings, at both readings of the list's time zone
        assert stats["queries_throttled"] == 0
    finally:
        await services.stop()
