"""Each job's work runs supervised: a database fault or a bug resumes it from the job's row, and repeated bugs
fail the job with its money released instead of leaving it stuck.

A database fault (a locked file, a cut connection) is never the job's fault: its work is resumed from the row
once the database answers again, retried with back-off for as long as the fault lasts, and nothing about the
job is dropped from memory meanwhile (its provider slot stays held). A bug is counted: after `max_crashes`
in a row the job is failed with its money released, but only once its provider task is provably over, so the
slot it holds never lets one task too many run on the account.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from bot.dashscope.errors import DashScopeError
from bot.dashscope.models import TaskStatus
from bot.jobs.db import LeaseLost, is_database_fault
from bot.jobs.models import Job, JobState
from bot.jobs.store import utcnow
from bot.jobs.worker.context import TASK_LIFETIME, WorkerContext

log = logging.getLogger(__name__)

T = TypeVar("T")
TASK_OVER = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED})


class Supervisor:
    """Runs one job's work at a time per call; `resume` picks an interrupted job's work up from its row."""

    def __init__(self, ctx: WorkerContext, resume: Callable[[Job], Awaitable[None]]) -> None:
        self._ctx = ctx
        self._resume = resume
        self._crashes: dict[int, int] = {}  # bugs in a row per job; pruned when its work ends or it is given up
        self._active: dict[int, int] = {}  # supervised works running per job
        self.waiting: set[int] = set()  # jobs whose work waits to resume (the database away, or a crash's back-off)

    def active(self, job_id: int) -> bool:
        """Whether some of the job's work is running (or waiting to resume) under this supervisor."""
        return job_id in self._active

    def crashes(self) -> dict[int, int]:
        """Jobs with crashes not yet followed by a clean step (tests, to check nothing is kept for ever)."""
        return dict(self._crashes)

    def run(self, job_id: int, kind: str, work: Coroutine[Any, Any, None]) -> None:
        """Start one job's work under the supervisor (not once the worker is stopping: the row resumes it)."""
        if self._ctx.tasks.closing:
            work.close()  # never started: closing it avoids a "never awaited" warning
            return
        task = self._ctx.tasks.spawn(self._supervised(job_id, kind, work), f"{kind}-{job_id}")
        self._active[job_id] = self._active.get(job_id, 0) + 1

        # A task cancelled before its first step (a stop) never awaits `work`: close it then, quietly. Once the
        # task is done, `work` is finished or never started, so closing it is always safe.
        def done(_: asyncio.Task[None]) -> None:
            work.close()
            left = self._active.get(job_id, 1) - 1
            if left > 0:
                self._active[job_id] = left
            else:
                self._active.pop(job_id, None)

        task.add_done_callback(done)

    async def _supervised(self, job_id: int, kind: str, work: Coroutine[Any, Any, None]) -> None:
        """Run `work`; on a database fault resume the job from its row once the database answers; on a bug
        resume it with backoff, and after `max_crashes` bugs in a row give it up. The log has the trace."""
        ctx = self._ctx
        try:
            await work
        except LeaseLost as exc:
            # Another process holds the dispatcher lease now: not a crash of this job. Stop dispatching at
            # once; the row is left as it is and the new holder resumes it.
            log.warning("job %s: %s stopped, dispatcher lease lost (%s)", job_id, kind, exc, extra={"job_id": job_id})
            ctx.stopping = True
            ctx.wake()
            ctx.lease_lost.set()
            return
        except Exception as exc:
            if is_database_fault(exc):
                ctx.counters["database_faults"] += 1
                log.warning(
                    "job %s: %s interrupted by a database fault (%s: %s); it resumes from its row once the "
                    "database answers", job_id, kind, type(exc).__name__, exc, extra={"job_id": job_id},
                )  # fmt: skip
                await self._resume_from_row(job_id, self._db_delay(0))
                return
            await self._crashed(job_id, kind)
            return
        self._crashes.pop(job_id, None)  # a clean step: only crashes in a row count

    async def _crashed(self, job_id: int, kind: str) -> None:
        ctx = self._ctx
        crashes = self._crashes[job_id] = self._crashes.get(job_id, 0) + 1
        ref = secrets.token_hex(4)
        ctx.counters["job_crashes"] += 1
        log.exception(
            "job %s: %s crashed (crash %d of %d, ref %s)", job_id, kind, crashes, ctx.config.max_crashes, ref,
            extra={"job_id": job_id, "ref": ref},
        )  # fmt: skip
        if crashes >= ctx.config.max_crashes:
            await self._give_up(job_id, ref)
            return
        await self._resume_from_row(job_id, ctx.config.crash_backoff_s * 2 ** (crashes - 1))

    def _db_delay(self, failures: int) -> float:
        cfg = self._ctx.config
        return float(min(cfg.db_retry_max_s, cfg.db_retry_base_s * 2**failures))

    async def _resume_from_row(self, job_id: int, delay: float) -> None:
        """Re-read the job's row and resume its work, retrying database faults for as long as they last. The
        job's slot stays held meanwhile: its task may be running at the provider."""
        self.waiting.add(job_id)
        try:
            await self._resume_when_answered(job_id, delay)
        finally:
            self.waiting.discard(job_id)

    def summary(self) -> dict[str, int]:
        """For /healthz: jobs with work running, waiting to resume, and with crashes not yet behind them."""
        return {"running": len(self._active), "waiting_to_resume": len(self.waiting), "crashed": len(self._crashes)}

    async def _resume_when_answered(self, job_id: int, delay: float) -> None:
        ctx = self._ctx
        failures = 0
        while True:
            await asyncio.sleep(delay)
            if ctx.stopping:
                return  # the row resumes it at the next start (or the next lease holder's recovery)
            try:
                job = await ctx.store.get(job_id)
                if job is None or job.is_final:
                    self._crashes.pop(job_id, None)
                    ctx.free_slot(job_id)
                    return
                await self._resume(job)
                if failures:
                    log.info("job %s resumed after %d database retries", job_id, failures, extra={"job_id": job_id})
                return
            except Exception as exc:
                if not is_database_fault(exc):
                    await self._crashed(job_id, "resume")
                    return
                failures += 1
                delay = self._db_delay(failures)
                log.debug("job %s: database still unavailable (%s); retrying in %.2f s", job_id, exc, delay)

    async def _retrying(self, step: Callable[[], Awaitable[T]]) -> T:
        """`step()`, again after every database fault (with back-off) until it answers."""
        failures = 0
        while True:
            try:
                return await step()
            except Exception as exc:
                if not is_database_fault(exc):
                    raise
                await asyncio.sleep(self._db_delay(failures))
                failures += 1

    async def _give_up(self, job_id: int, ref: str) -> None:
        """Fail a job whose work keeps crashing, with its money released, once its task is provably over."""
        ctx = self._ctx
        job = await self._retrying(lambda: ctx.store.get(job_id))
        if job is None or job.is_final:
            self._crashes.pop(job_id, None)
            ctx.free_slot(job_id)
            return
        log.error("job %s failed after %d crashes (ref %s); its provider slot stays held until its task is over",
                  job_id, ctx.config.max_crashes, ref, extra={"job_id": job_id, "ref": ref})  # fmt: skip
        await ctx.safe(ctx.notifier.owner_alert("alert.job_crashed", job_id=job_id, ref=ref))
        if not await self._task_over(job):
            return  # stopping: the row resumes the job at the next start
        await self._retrying(
            lambda: ctx.fail(job, "job.failed.internal", code="InternalCrash", release=True, detail=f"ref {ref}")
        )
        self._crashes.pop(job_id, None)

    async def _task_over(self, job: Job) -> bool:
        """Wait until the job's provider task (if it may have one) can no longer run; False when stopping first.

        A known task is asked about with plain status queries (cancelled while still queued, so the provider
        stops before billing); a create whose answer was lost may have made a task nobody can name, so its slot
        is kept for as long as a task of that tier could take."""
        ctx = self._ctx
        cfg = ctx.config
        if job.state is JobState.SUBMITTING:
            stats = ctx.scheduler.durations_for(job.request.model, job.request.resolution)
            hold = cfg.request_timeout_s + stats.mean_queued + stats.running_bounds()[1]
            await asyncio.sleep(hold)
            return not ctx.stopping
        if job.task_id is None or job.state not in (JobState.PENDING, JobState.RUNNING):
            return True
        client = ctx.clients.get(job.account or "")
        if client is None:
            return True
        unknown, cancel_asked = 0, False
        while not ctx.stopping:
            if job.submitted_at is not None and utcnow() - job.submitted_at > TASK_LIFETIME:
                return True
            try:
                result = await client.get_task(job.task_id)
            except DashScopeError:
                result = None
            if result is not None:
                if result.status in TASK_OVER:
                    return True
                unknown = unknown + 1 if result.status is TaskStatus.UNKNOWN else 0
                if unknown >= 2:
                    return True
                if result.status is TaskStatus.PENDING and not cancel_asked:
                    cancel_asked = await ctx.cancel_at_provider(job)
            await asyncio.sleep(cfg.poll_max_interval)
        return False
