"""Following other processes' job changes through LISTEN/NOTIFY (issue 14: several processes, one database).

The store notifies on commit of every admission and state change (`JOB_CHANNEL`, tagged with the store's
origin). Each process listens and applies the changes made by the others to its in-memory queue:

- the dispatcher (the lease holder) queues jobs admitted elsewhere, and drops jobs cancelled elsewhere;
- a standby keeps a mirror of the queue, so the positions and ETAs it shows are everyone's.

Its own changes it already applied in process, so they are skipped. Notifications are hints read in commit
order by one consumer; the row is re-read before a job is queued, and the dispatcher checks the row again
before submitting, so a stale or missed hint can delay a job but never submit one twice. No database
polling: hints missed while the LISTEN connection was down are made good by re-reading the queued jobs and
the pauses from the tables once it is back, and a change that could not be applied because the database did
not answer is made good the same way (retried until it answers), never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from bot.background import BackgroundTasks
from bot.jobs.db import DatabaseError, is_database_fault
from bot.jobs.models import JobState, PauseScope
from bot.jobs.store import JOB_CHANNEL, PAUSE_CHANNEL, read_job_notice

from . import Worker

log = logging.getLogger(__name__)

RESYNC: Literal["resync"] = "resync"  # re-read every queued job and the pauses from the tables
Change = tuple[int, JobState] | Literal["resync"] | None


class JobFollower:
    """Applies other processes' admissions and state changes to this process's worker queue."""

    def __init__(self, worker: Worker, tasks: BackgroundTasks | None = None) -> None:
        self._worker = worker
        self._tasks = tasks or BackgroundTasks()
        # (job id, state) of another process's change; None: the owners' pauses changed elsewhere; RESYNC: the
        # LISTEN connection was re-established (or the database did not answer): re-read the tables.
        self._inbox: asyncio.Queue[Change] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self.resyncs = 0  # full re-reads done (tests)
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
        store.database.on_reconnect(lambda: self._inbox.put_nowait(RESYNC))
        self._consumer = self._tasks.supervise("job-follower", self._consume)

    async def stop(self) -> None:
        """Stop listening and applying."""
        for stop_listening in self._stop_listening:
            with contextlib.suppress(DatabaseError, OSError):
                await stop_listening()
        self._stop_listening = []
        if self._consumer is not None:
            self._consumer.cancel()  # the supervisor's loop: cancelled, it stops for good
            await asyncio.gather(self._consumer, return_exceptions=True)
            self._consumer = None

    async def _consume(self) -> None:
        failures = 0
        change: Change = None
        retrying = False
        while True:
            if not retrying:
                change = await self._inbox.get()
            try:
                if change == RESYNC:
                    await self._resync()
                elif change is None:
                    await self._sync_pauses()
                else:
                    await self._apply(*change)
                retrying, failures = False, 0
            except Exception as exc:
                if not is_database_fault(exc):  # one bad hint must not stop the others; the row is the truth
                    log.exception("applying another process's change (%s) failed", change or "pauses")
                    retrying = False
                    continue
                # The database did not answer: nothing is dropped, everything is re-read once it answers.
                if not retrying:
                    log.warning("following other processes paused: the database does not answer (%s)", exc)
                change, retrying = RESYNC, True
                failures += 1
                config = self._worker.config
                await asyncio.sleep(min(config.db_retry_max_s, config.db_retry_base_s * 2**failures))

    async def _resync(self) -> None:
        """Make this process's queue what the tables say: queue the QUEUED jobs it misses (admitted elsewhere
        while it could not hear), drop those no longer queued, and take the pauses again."""
        worker = self._worker
        scheduler = worker.scheduler
        queued = await worker.store.jobs_in_states([JobState.QUEUED])
        ids = {job.id for job in queued}
        added = 0
        for job in queued:
            if job.id in scheduler.queue or scheduler.limits.holds(job.id) or worker.supervisor.active(job.id):
                continue
            worker.enqueue(job)
            added += 1
        dropped = []
        for job_id in [job_id for job_id in list(scheduler.queue.positions()) if job_id not in ids]:
            row = await worker.store.get(job_id)  # admitted here after the read above: still queued, kept
            if (row is None or row.state is not JobState.QUEUED) and worker.dequeue(job_id):
                dropped.append(job_id)
        await self._sync_pauses()
        self.resyncs += 1
        log.info("re-read the queue from the database: %d queued job(s) added, %d dropped", added, len(dropped))

    async def _sync_pauses(self) -> None:
        """Make this process's pauses what the database says (another process's owner command, or the
        dispatcher's finding about an account, changed them). Accounts not configured here are left alone
        ("none", paused for want of a key)."""
        worker = self._worker
        scheduler = worker.scheduler
        known = set(worker.clients)
        stored = {
            (held.scope, held.target): held
            for held in await worker.store.pauses()
            if held.scope is not PauseScope.ACCOUNT or held.target in known
        }
        for held in scheduler.pauses():
            if held.scope is PauseScope.ACCOUNT and held.target not in known:
                continue
            if (held.scope, held.target) not in stored:
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
