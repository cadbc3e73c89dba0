"""Dispatcher leases and fencing (issue 14): one dispatcher per account, takeover, a stale holder writes nothing."""

from __future__ import annotations

import asyncio

import pytest

from bot.jobs.db import Database, LeaseLost
from bot.jobs.models import JobState
from bot.jobs.store import JobStore
from bot.jobs.worker.lease import DispatchLease, lease_name
from tests.support.postgres import OpenDatabase

NOW = "2025-01-02T03:04:05+00:00"


async def _queued_job(db: Database) -> int:
    async with db.transaction() as tx:
        row = await tx.fetch_one(
            """INSERT INTO jobs (guild_id, channel_id, user_id, model, resolution, prompt, first_frame, state,
               queue_seq, cost_reserved, charge_state, period_day, period_month, created_at, updated_at)
               VALUES (1, 2, 3, 'wan2.2-kf2v-flash', '480P', 'p', 'frames/a.png', 'queued',
                       (SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM jobs), 700, 'reserved', '2025-01-02',
                       '2025-01', ?, ?) RETURNING id""",
            (NOW, NOW),
        )
    assert row is not None
    return int(row[0])


async def test_sqlite_one_process_behaves_as_before(database: Database, engine: str) -> None:
    if engine != "sqlite":
        pytest.skip("the single-process engine")
    store = JobStore(database)
    job_id = await _queued_job(database)
    # Unfenced (no lease wiring): a submission write goes through as it always has.
    job = await store.transition(job_id, JobState.SUBMITTING, expect=JobState.QUEUED, account="main", attempts=1)
    assert job.state is JobState.SUBMITTING
    lease = DispatchLease(database, ["main", "extra"], "this-process", ttl=5)
    assert await lease.acquire() and lease.held
    store.fence_for = lease.fence_for
    job = await store.transition(job_id, JobState.PENDING, expect=JobState.SUBMITTING, task_id="t-1")
    assert job.task_id == "t-1"


async def test_one_holder_and_fenced_takeover(open_database_of_engine: OpenDatabase, engine: str) -> None:
    if engine != "postgresql":
        pytest.skip("leases between processes need PostgreSQL")
    db_a, db_b = await open_database_of_engine(), await open_database_of_engine()
    store_a, store_b = JobStore(db_a), JobStore(db_b)
    a = DispatchLease(db_a, ["main", "extra"], "process-a", ttl=0.6)
    b = DispatchLease(db_b, ["extra", "main"], "process-b", ttl=0.6)
    store_a.fence_for, store_b.fence_for = a.fence_for, b.fence_for
    first, second = await _queued_job(db_a), await _queued_job(db_a)

    assert await a.acquire()
    assert not await b.acquire() and b.epochs == {}, "all or none: b took nothing"
    job = await store_a.transition(first, JobState.SUBMITTING, expect=JobState.QUEUED, account="main", attempts=1)
    assert job.state is JobState.SUBMITTING
    with pytest.raises(LeaseLost):  # b is a standby: it may not submit
        await store_b.transition(second, JobState.SUBMITTING, expect=JobState.QUEUED, account="main", attempts=1)

    # a stops renewing (killed, or frozen past its lease); b takes over with larger epochs.
    old_epochs = dict(a.epochs)
    await asyncio.sleep(a.ttl)  # past a's expiry
    assert await b.acquire()
    assert all(b.epochs[acct] > old_epochs[acct] for acct in old_epochs)
    assert not await a.renew() and not a.held, "a learns it lost the lease at its next heartbeat"

    # a's in-memory epochs are stale (it hasn't renewed yet): the database refuses its submission writes.
    a.epochs = old_epochs
    with pytest.raises(LeaseLost):
        await store_a.transition(second, JobState.SUBMITTING, expect=JobState.QUEUED, account="main", attempts=1)
    with pytest.raises(LeaseLost):
        await store_a.transition(first, JobState.PENDING, expect=JobState.SUBMITTING, task_id="late-answer")
    row = await db_a.fetch_one("SELECT state, task_id FROM jobs WHERE id = ?", (first,))
    assert row is not None and (row["state"], row["task_id"]) == ("submitting", None), "nothing written"
    row = await db_a.fetch_one("SELECT state FROM jobs WHERE id = ?", (second,))
    assert row is not None and row["state"] == "queued"

    # The new holder recovers the SUBMITTING job (its reconciliation records the task id) and submits.
    job = await store_b.transition(first, JobState.PENDING, expect=JobState.SUBMITTING, task_id="found-it")
    assert job.task_id == "found-it"
    job = await store_b.transition(second, JobState.SUBMITTING, expect=JobState.QUEUED, account="extra", attempts=1)
    assert job.account == "extra"
    # Writes that aren't submissions (polling, delivery, cancel) need no lease.
    job = await store_a.transition(first, JobState.RUNNING, expect=JobState.PENDING)
    assert job.state is JobState.RUNNING


async def test_hold_hands_over_after_a_holder_dies_and_at_once_after_a_graceful_stop(
    open_database_of_engine: OpenDatabase, engine: str
) -> None:
    if engine != "postgresql":
        pytest.skip("leases between processes need PostgreSQL")
    dbs = [await open_database_of_engine() for _ in range(3)]
    events: list[tuple[str, str]] = []
    acquired = asyncio.Queue[str]()

    def holder(name: str, db: Database) -> tuple[DispatchLease, asyncio.Task[None]]:
        lease = DispatchLease(db, ["main"], name, ttl=0.9, retry_s=0.2)

        async def on_acquired() -> None:
            events.append(("acquired", name))
            acquired.put_nowait(name)

        async def on_lost() -> None:
            events.append(("lost", name))

        return lease, asyncio.create_task(lease.hold(on_acquired, on_lost))

    leases = dict(holder(f"p{i}", db) for i, db in enumerate(dbs))
    tasks = {lease.holder: task for lease, task in leases.items()}
    by_name = {lease.holder: lease for lease in leases}
    try:
        first = await asyncio.wait_for(acquired.get(), 10)
        # "Death": the holder's loop stops without releasing (as under SIGKILL: no code runs).
        dead = tasks.pop(first)
        dead.cancel()
        by_name[first].epochs = {}  # its release in `finally` must not hand over: simulate that it never ran
        await asyncio.gather(dead, return_exceptions=True)
        second = await asyncio.wait_for(acquired.get(), 10)
        assert second != first
        row = await dbs[0].fetch_one("SELECT holder FROM kf2v_leases WHERE name = ?", (lease_name("main"),))
        assert row is not None and row[0] == second
        # A graceful stop releases and notifies: the last one takes over without waiting for expiry.
        graceful = tasks.pop(second)
        graceful.cancel()
        await asyncio.gather(graceful, return_exceptions=True)
        third = await asyncio.wait_for(acquired.get(), 10)
        assert third not in (first, second)
        assert [e for e in events if e[0] == "acquired"] == [("acquired", n) for n in (first, second, third)]
        assert ("lost", first) not in events, "a dead holder runs nothing"
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
