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
from bot.jobs.models import JobState, PauseScope
from bot.jobs.store import JOB_CHANNEL, PAUSE_CHANNEL, read_job_notice

from . import Worker

log = logging.getLogger(__name__)


class JobFollower:
    """Applies other processes' admissions and state changes to this process's worker queue."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        # (job id, state) of another process's change; None: the owners' pauses changed elsewhere.
        self._inbox: asyncio.Queue[tuple[int, JobState] | None] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._stop_listening: list[Callable[[], Awaitable[None]]] = []
        self.applied = 0  # notifications from other processes acted on (tests, metrics)

    async def start(self) -> None:
        """Listen on the job channel and apply what arrives, in order."""
        store = self._worker.store
        origin = store.origin

        def heard(_channel: str, payload: str) -> None:
            notice = read_job_notice(payload)
            if notice is not None and notice[2] != origin:
                self._inbox.put_nowait((notice[0], notice[1]))

        def pauses_changed(_channel: str, payload: str) -> None:
            if payload != origin:
                self._inbox.put_nowait(None)

        self._stop_listening = [
            await store.database.listen(JOB_CHANNEL, heard),
            await store.database.listen(PAUSE_CHANNEL, pauses_changed),
        ]
        self._consumer = asyncio.create_task(self._consume(), name="kf2v-job-follower")

    async def stop(self) -> None:
        """Stop listening and applying."""
        for stop_listening in self._stop_listening:
            with contextlib.suppress(DatabaseError, OSError):
                await stop_listening()
        self._stop_listening = []
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
            self._consumer = None

    async def _consume(self) -> None:
        while True:
            change = await self._inbox.get()
            try:
                if change is None:
                    await self._sync_pauses()
                else:
                    await self._apply(*change)
            except Exception:  # one bad hint must not stop the others; the row is the truth anyway
                log.exception("applying another process's change (%s) failed", change or "pauses")

    async def _sync_pauses(self) -> None:
        """Make this process's pauses of everything and of guilds what the database says (another process's
        owner command changed them); account pauses are this process's own findings and stay."""
        scheduler = self._worker.scheduler
        stored = {(held.scope, held.target): held for held in await self._worker.store.pauses()}
        for held in scheduler.pauses():
            if held.scope is not PauseScope.ACCOUNT and (held.scope, held.target) not in stored:
                scheduler.resume(held.scope, held.target)
        for held in stored.values():
            scheduler.pause(held)
        self._worker.wake()
        self.applied += 1

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
