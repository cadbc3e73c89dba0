"""Rotating DASHSCOPE_API_KEY with jobs in flight (issue 17, item 8): accounts are named by their place in the
configuration ("primary", "extra-1"...), so a job sent with the old key is polled, fetched and settled with the
new one after a restart, instead of failing "account gone" (released while the provider bills its task).

Real SQLite file, real aiohttp client, the emulator with both keys in one main account (a rotation in the
Alibaba Cloud console keeps the account; its tasks are readable by any of its keys).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.dashscope.client import account_fingerprint
from bot.jobs.models import ChargeState, JobState
from sandbox.dashscope_emulator import DashScopeEmulator, EmulatorConfig, FaultConfig
from tests.support.engine import API_KEY, all_final, draft, start_engine
from tests.support.waiting import wait_until

NEW_KEY = "sk-test-rotated-fedcba9876543210"


@pytest.fixture
async def emulator() -> AsyncIterator[DashScopeEmulator]:
    config = EmulatorConfig(
        seed=5, pending_s=(0.05, 0.1), running_s=(2.0, 2.0), accounts={API_KEY: "team", NEW_KEY: "team"}
    )
    emu = DashScopeEmulator(config)
    await emu.start()
    yield emu
    await emu.stop()


async def test_a_job_in_flight_carries_on_after_the_key_is_rotated(tmp_path: Path, emulator: DashScopeEmulator) -> None:
    services, _ = await start_engine(tmp_path, emulator.base_url)
    job = await services.jobs.submit(draft(prompt="sent with the old key"))

    async def running() -> bool:
        current = await services.store.get(job.id)
        return current is not None and current.state is JobState.RUNNING

    await wait_until(running, within=30)
    await services.stop()

    # The operator rotates the key and restarts.
    services, recorder = await start_engine(tmp_path, emulator.base_url, DASHSCOPE_API_KEY=NEW_KEY)
    try:
        await wait_until(lambda: all_final(services, [job.id]), within=30)
        done = await services.store.get(job.id)
        assert done is not None
        assert (done.account, done.state, done.charge_state) == ("primary", JobState.DELIVERED, ChargeState.SETTLED)
        assert [job_id for job_id, _ in recorder.delivered] == [job.id]
        ours = [t for t in emulator.stats()["tasks"] if not t["neighbour"]]
        assert [t["task_id"] for t in ours] == [done.task_id]  # its one task, not a second one
        # The old key's api_key_id is forgotten (the new key's tasks carry another); the binding moved on.
        assert await services.store.api_key_id("primary") is None
        assert await services.store.bind_account("primary", account_fingerprint(NEW_KEY)) == account_fingerprint(
            NEW_KEY
        )
    finally:
        await services.stop()


async def test_rows_named_by_the_old_fingerprint_are_renamed_once(tmp_path: Path, emulator: DashScopeEmulator) -> None:
    services, _ = await start_engine(tmp_path, emulator.base_url)
    try:
        store = services.store
        old_name = account_fingerprint("sk-test-before-the-upgrade")
        await store.save_api_key_id(old_name, "key-id-1")
        assert await store.bind_account("extra-1", old_name) is None
        assert await store.api_key_id("extra-1") == "key-id-1" and await store.api_key_id(old_name) is None
    finally:
        await services.stop()


async def test_a_job_whose_accounts_place_was_removed_fails_released_and_the_owners_hear_of_it(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    services, _ = await start_engine(tmp_path, emulator.base_url, KF2V_DASHSCOPE_EXTRA_API_KEYS=NEW_KEY)
    await services.jobs.pause("send it with the extra key", account="primary")
    job = await services.jobs.submit(draft(prompt="on the extra account"))

    async def at_provider() -> bool:
        current = await services.store.get(job.id)
        return current is not None and current.state in (JobState.PENDING, JobState.RUNNING)

    await wait_until(at_provider, within=30)
    await services.stop()
    # The operator drops the extra key while its job runs, and restarts.
    services, recorder = await start_engine(tmp_path, emulator.base_url)
    try:
        await wait_until(lambda: all_final(services, [job.id]), within=30)
        done = await services.store.get(job.id)
        assert done is not None
        assert (done.account, done.state, done.charge_state) == ("extra-1", JobState.FAILED, ChargeState.RELEASED)
        assert [(key, params["job_id"]) for key, params in recorder.alerts] == [("alert.account_gone", job.id)]
    finally:
        await services.stop()


async def test_a_succeeded_job_not_yet_downloaded_is_delivered_after_the_key_is_rotated(
    tmp_path: Path, emulator: DashScopeEmulator
) -> None:
    emulator.update(faults=FaultConfig(error_rate=1.0, routes=frozenset({"video"})))  # its download keeps failing
    services, _ = await start_engine(tmp_path, emulator.base_url)
    job = await services.jobs.submit(draft(prompt="made, not fetched yet"))

    async def succeeded() -> bool:
        current = await services.store.get(job.id)
        return current is not None and current.state is JobState.SUCCEEDED

    await wait_until(succeeded, within=30)
    await services.stop()

    emulator.update(faults=FaultConfig())
    services, recorder = await start_engine(tmp_path, emulator.base_url, DASHSCOPE_API_KEY=NEW_KEY)
    try:
        await wait_until(lambda: all_final(services, [job.id]), within=30)
        done = await services.store.get(job.id)
        assert done is not None
        assert (done.state, done.charge_state) == (JobState.DELIVERED, ChargeState.SETTLED)
        assert [job_id for job_id, _ in recorder.delivered] == [job.id]
    finally:
        await services.stop()
