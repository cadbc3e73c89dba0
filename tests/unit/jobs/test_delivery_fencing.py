"""Settling and delivering are fenced like submissions (issue 17): a dispatcher frozen past its lease can neither
charge a job, nor post its video, nor record it delivered; the new holder can."""

from __future__ import annotations

import asyncio

import pytest

from bot.jobs.db import LeaseLost
from bot.jobs.models import ChargeState, JobState
from bot.jobs.store import JobStore
from bot.jobs.worker.lease import DispatchLease
from tests.support.postgres import OpenDatabase
from tests.unit.jobs.test_dispatch_lease import _queued_job


async def test_a_frozen_former_holder_can_neither_settle_nor_post(
    open_database_of_engine: OpenDatabase, engine: str
) -> None:
    if engine != "postgresql":
        pytest.skip("leases between processes need PostgreSQL")
    db_a, db_b = await open_database_of_engine(), await open_database_of_engine()
    store_a, store_b = JobStore(db_a), JobStore(db_b)
    a = DispatchLease(db_a, ["main"], "process-a", ttl=0.6)
    b = DispatchLease(db_b, ["main"], "process-b", ttl=0.6)
    store_a.fence_for, store_b.fence_for = a.fence_for, b.fence_for
    settling, posting = await _queued_job(db_a), await _queued_job(db_a)
    assert await a.acquire()
    for job_id in (settling, posting):
        await store_a.transition(job_id, JobState.SUBMITTING, expect=JobState.QUEUED, account="main", attempts=1)
        await store_a.transition(job_id, JobState.PENDING, expect=JobState.SUBMITTING, task_id=f"t-{job_id}")
    await store_a.transition(posting, JobState.SUCCEEDED, expect=JobState.PENDING, settle=700)

    stale = dict(a.epochs)  # a freezes; its lease expires; b takes over
    await asyncio.sleep(a.ttl)
    assert await b.acquire()
    a.epochs = stale
    with pytest.raises(LeaseLost):
        await store_a.transition(settling, JobState.SUCCEEDED, expect=JobState.PENDING, settle=700)
    job = await store_a.get(posting)
    assert job is not None
    with pytest.raises(LeaseLost):
        await store_a.check_lease(job)  # asked before the video is posted
    with pytest.raises(LeaseLost):
        await store_a.transition(posting, JobState.DELIVERED, expect=JobState.SUCCEEDED)
    unsettled = await store_a.get(settling)
    assert unsettled is not None and unsettled.charge_state is ChargeState.RESERVED, "nothing charged"
    assert [e.kind for e in await store_a.ledger() if e.job_id == settling] == []  # no settle row written

    # The new holder does both.
    await store_b.check_lease(job)
    settled = await store_b.transition(settling, JobState.SUCCEEDED, expect=JobState.PENDING, settle=700)
    delivered = await store_b.transition(posting, JobState.DELIVERED, expect=JobState.SUCCEEDED)
    assert settled.charge_state is ChargeState.SETTLED and delivered.state is JobState.DELIVERED
