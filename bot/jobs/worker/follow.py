"""Following other processes' job changes through LISTEN/NOTIFY (issue 14: several processes, one database).

The store notifies on commit of every admission and state change (`JOB_CHANNEL`, tagged with the store's
origin). Each process listens and applies the changes made by the others to its in-memory queue:

- the dispatcher (the lease holder) queues jobs admitted elsewhere, and drops jobs cancelled elsewhere;
- a standby keeps a mirror of the queue, so the positions and ETAs it shows are everyone's.

Its own changes it already applied in process, so they are skipped. Notifications are hints read in commit
order by one consumer; the row is re-read before a job is queued, and the dispatcher checks the row again
before submitting, so a stale or missed hint can delay a job but never submit one twice. No database
polling: a missed hint (the LISTEN connection dropped) is made good by the next holder's recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.jobs.db import DatabaseError
from bot.jobs.models import JobState
from bot.jobs.store import JOB_CHANNEL, read_job_notice

from . import Worker

log = logging.getLogger(__name__)


class JobFollower:
    """Applies other processes' admissions and state changes to this process's worker queue."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._inbox: asyncio.Queue[tuple[int, JobState]] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._stop_listening: Callable[[], Awaitable[None]] | None = None
        self.applied = 0  # notifications from other processes acted on (tests, metrics)

    async def start(self) -> None:
        """Listen on the job channel and apply what arrives, in order."""
        store = self._worker.store
        origin = store.origin

        def heard(_channel: str, payload: str) -> None:
            notice = read_job_notice(payload)
            if notice is not None and notice[2] != origin:
                self._inbox.put_nowait((notice[0], notice[1]))

        self._stop_listening = await store.database.listen(JOB_CHANNEL, heard)
        self._consumer = asyncio.create_task(self._consume(), name="kf2v-job-follower")

    async def stop(self) -> None:
        if self._stop_listening is not None:
            with contextlib.suppress(DatabaseError, OSError):
                await self._stop_listening()
            self._stop_listening = None
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
            self._consumer = None

    async def _consume(self) -> None:
        while True:
            job_id, state = await self._inbox.get()
            try:
                await self._apply(job_id, state)
            except Exception:  # one bad hint must not stop the others; the row is the truth anyway
                log.exception("applying another process's change of job %s failed", job_id)

    async def _apply(self, job_id: int, state: JobState) -> None:
        worker = self._worker
        scheduler = worker.scheduler
        if state is not JobState.QUEUED:
            if worker.dequeue(job_id):  # submitted, cancelled or finished elsewhere: no longer waiting here
                self.applied += 1
            return
        if job_id in scheduler.queue or scheduler.limits.holds(job_id):
            return
        job = await worker.store.get(job_id)
        # Re-checked after the read: a job this process started on meanwhile is never queued a second time.
        if job is None or job.state is not JobState.QUEUED:
            return
        if job_id in scheduler.queue or scheduler.limits.holds(job_id):
            return
        worker.enqueue(job)
        self.applied += 1
