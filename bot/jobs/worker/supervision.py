"""Each job's work runs supervised: a bug restarts it from the job's row, and repeated bugs fail the job with
its money released instead of leaving it stuck."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bot.jobs.db import LeaseLost
from bot.jobs.models import Job
from bot.jobs.worker.context import WorkerContext

log = logging.getLogger(__name__)


class Supervisor:
    """Runs one job's work at a time per call; `resume` picks a crashed job's work up from its row."""

    def __init__(self, ctx: WorkerContext, resume: Callable[[Job], Awaitable[None]]) -> None:
        self._ctx = ctx
        self._resume = resume
        self._crashes: dict[int, int] = {}

    def run(self, job_id: int, kind: str, work: Coroutine[Any, Any, None]) -> None:
        """Start one job's work under the supervisor (not once the worker is stopping: the row resumes it)."""
        if self._ctx.tasks.closing:
            work.close()  # never started: closing it avoids a "never awaited" warning
            return
        task = self._ctx.tasks.spawn(self._supervised(job_id, kind, work), f"{kind}-{job_id}")
        # A task cancelled before its first step (a stop) never awaits `work`: close it then, quietly. Once the
        # task is done, `work` is finished or never started, so closing it is always safe.
        task.add_done_callback(lambda _: work.close())

    async def _supervised(self, job_id: int, kind: str, work: Coroutine[Any, Any, None]) -> None:
        """Run `work`; on an unexpected exception resume the job from its row with backoff, and after
        `max_crashes` crashes fail it with its money released. The log has the trace and a reference id."""
        ctx = self._ctx
        try:
            await work
            return
        except LeaseLost as exc:
            # Another process holds the dispatcher lease now: not a crash of this job. Stop dispatching at
            # once; the row is left as it is and the new holder resumes it.
            log.warning("job %s: %s stopped, dispatcher lease lost (%s)", job_id, kind, exc, extra={"job_id": job_id})
            ctx.stopping = True
            ctx.wake()
            ctx.lease_lost.set()
            return
        except Exception:
            crashes = self._crashes[job_id] = self._crashes.get(job_id, 0) + 1
            ref = secrets.token_hex(4)
            ctx.counters["job_crashes"] += 1
            log.exception(
                "job %s: %s crashed (crash %d of %d, ref %s)", job_id, kind, crashes, ctx.config.max_crashes, ref,
                extra={"job_id": job_id, "ref": ref},
            )  # fmt: skip
        try:
            if crashes >= ctx.config.max_crashes:
                await self._give_up(job_id, ref)
                return
            await asyncio.sleep(ctx.config.crash_backoff_s * 2 ** (crashes - 1))
            job = await ctx.store.get(job_id)
            if job is not None and not job.is_final and not ctx.stopping:
                await self._resume(job)
        except Exception:
            log.exception("job %s: recovery after a crash failed (ref %s); it resumes at the next start", job_id, ref)

    async def _give_up(self, job_id: int, ref: str) -> None:
        ctx = self._ctx
        job = await ctx.store.get(job_id)
        if job is None or job.is_final:
            return
        log.error("job %s failed after %d crashes (ref %s)", job_id, ctx.config.max_crashes, ref,
                  extra={"job_id": job_id, "ref": ref})  # fmt: skip
        await ctx.fail(job, "job.failed.internal", code="InternalCrash", release=True, detail=f"ref {ref}")
        await ctx.safe(ctx.notifier.owner_alert("alert.job_crashed", job_id=job_id, ref=ref))
