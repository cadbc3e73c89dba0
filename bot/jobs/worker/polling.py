"""Polling: watch a task the provider has until it finishes, planning each poll around when it can finish."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime

from bot.dashscope.errors import AccountProblemError, DashScopeError, MalformedAnswerError, ProviderUnavailableError
from bot.dashscope.families import family_named
from bot.dashscope.models import TaskResult, TaskStatus
from bot.jobs.models import Job, JobState
from bot.jobs.scheduler import QueuedJob
from bot.jobs.store import utcnow
from bot.jobs.worker.context import TASK_LIFETIME, WorkerContext, describe_failure
from bot.jobs.worker.delivery import Delivery
from bot.jobs.worker.supervision import Supervisor

log = logging.getLogger(__name__)


class Poller:
    """Polls the provider's tasks and acts on what they become (running, succeeded, failed, cancelled)."""

    def __init__(self, ctx: WorkerContext, supervisor: Supervisor, delivery: Delivery) -> None:
        self._ctx = ctx
        self._supervisor = supervisor
        self._delivery = delivery

    async def track(self, job: Job, account: str, *, fresh: bool) -> None:
        """The provider has the job's task now: tell the member and start polling it.

        `fresh`: the create's own answer (PENDING) just came, so the first poll can wait for the planner.
        """
        ctx = self._ctx
        assert job.task_id is not None
        ctx.wake()
        log.info("job %s submitted as task %s", job.id, job.task_id, extra={"job_id": job.id, "task_id": job.task_id})
        ctx.emit("submitted", job)
        await ctx.safe_update(job)
        if job.cancel_requested and await ctx.cancel_at_provider(job):
            pass  # the poll below sees CANCELED and releases the budget
        self.watch(job, fresh=fresh and not job.cancel_requested)

    def watch(self, job: Job, *, fresh: bool = False) -> None:
        """Poll the job's task under the supervisor."""
        self._supervisor.run(job.id, "poll", self._poll(job, fresh=fresh))

    def next_poll_delay(self, job: Job, previous_poll: float) -> float:
        """Seconds until this job's next poll. Only the finish matters; the start only narrows where it can be.

        * Waiting in the provider's queue: every sqrt(2 x gap x mean queued time), which balances polls
          spent while it waits against the start uncertainty they leave (that widens the finish window),
          and never more than the shortest run time (nothing can finish sooner after starting).
        * Running, started no earlier than `start_lo`: the finish lies in [start_lo + r_lo, started + r_hi]
          (the tier's run-time bounds: its prior, then what it learnt). Sleep until the window opens, then poll
          with gaps that shrink as it runs out (`window_gap`, from 1.5 x 2 x detection_target_s), so a finish is
          noticed detection_target_s late on average.
        * Later than ever seen: back off gently.
        Gaps are counted from the previous poll's start (handling its answer does not stretch the cadence)
        and stay within [poll_min_interval, poll_max_interval].
        """
        ctx = self._ctx
        cfg = ctx.config
        lo_gap, hi_gap = cfg.poll_min_interval, cfg.poll_max_interval
        now = ctx.clock()

        def after_previous(seconds: float) -> float:
            return max(0.0, previous_poll + max(lo_gap, min(hi_gap, seconds)) - now)

        stats = ctx.scheduler.durations_for(job.request.model, job.request.resolution, job.request.duration)
        r_lo, r_hi = stats.running_bounds()
        gap = max(lo_gap, 2 * cfg.detection_target_s)
        started = ctx.started_mono.get(job.id)
        if started is None:
            return after_previous(min(math.sqrt(2 * gap * stats.mean_queued), r_lo))
        window_start = ctx.start_lo.get(job.id, started) + r_lo
        window_end = started + r_hi

        def gap_at(at: float) -> float:
            return window_gap(at, window_start, window_end, gap, lo_gap)

        if now < window_start:
            return after_previous(window_start + gap_at(window_start) - previous_poll)
        if now <= window_end:
            return after_previous(gap_at(previous_poll))
        overdue = now - window_end  # later than ever seen: back off gently
        return after_previous(gap + overdue / 4)

    def _start_lower_bound(self, job: Job, result: TaskResult, polled_at: float) -> float:
        """The earliest monotonic time the provider can have started a task first seen RUNNING at `polled_at`.

        After our submit and its last PENDING poll; and when the answer carries the provider's submit and start
        times (their difference is the time it waited, free of clock skew), after our submit plus that wait.
        """
        submitted = None if job.submitted_at is None else polled_at - (utcnow() - job.submitted_at).total_seconds()
        bounds = [t for t in (self._ctx.last_pending_poll.get(job.id), submitted) if t is not None]
        waited = result.queued_seconds
        if waited is not None and submitted is not None:
            bounds.append(submitted + waited)
        return min(polled_at, max(bounds)) if bounds else polled_at

    async def _poll(self, job: Job, *, fresh: bool = False) -> None:
        ctx = self._ctx
        cfg = ctx.config
        assert job.task_id is not None and job.account is not None
        client = ctx.clients[job.account]
        gate = ctx.poll_gates[job.account]
        last = ctx.clock()
        errors = 0
        first = not fresh  # a resumed or reconciled task is asked about at once
        while not ctx.stopping:
            delay = 0.0 if first else self.next_poll_delay(job, last)
            first = False
            if errors:
                delay = max(delay, min(cfg.poll_max_interval, cfg.poll_min_interval * 2**errors))
            await asyncio.sleep(delay)
            await gate.wait()
            if job.submitted_at is not None and utcnow() - job.submitted_at > TASK_LIFETIME:
                await ctx.fail(job, "job.failed.expired", code="TaskExpired", release=True)
                return
            polled_at = ctx.clock()
            ctx.counters["polls"] += 1
            try:
                result = await client.get_task(job.task_id)
            except AccountProblemError as exc:
                ctx.count_error(exc)
                await ctx.account_problem(job.account, exc)
                errors += 1
                continue
            except MalformedAnswerError as exc:
                # An answer that can't be read says nothing about the task: ask again later, never conclude.
                ctx.count_error(exc)
                ctx.counters["malformed_answers"] += 1
                if job.id not in ctx.malformed_logged:
                    ctx.malformed_logged.add(job.id)
                    log.warning("job %s: unreadable answer from the provider (%s); retrying with backoff",
                                job.id, exc, extra={"job_id": job.id})  # fmt: skip
                errors += 1
                continue
            except DashScopeError as exc:
                ctx.count_error(exc)
                errors += 1
                log.info("poll of job %s failed (%s); retrying", job.id, exc.code, extra={"job_id": job.id})
                continue
            errors = 0
            last = polled_at
            refreshed = await ctx.store.get(job.id)
            if refreshed is None or refreshed.is_final:
                ctx.free_slot(job.id)
                return
            job = refreshed
            done = await self._on_status(job, result, polled_at)
            if done:
                return

    async def _on_status(self, job: Job, result: TaskResult, polled_at: float) -> bool:
        ctx = self._ctx
        status = result.status
        if status is TaskStatus.UNKNOWN:
            # Expired or never existed; believed only when repeated or when the task can't exist any more.
            streak = ctx.unknown_streak[job.id] = ctx.unknown_streak.get(job.id, 0) + 1
            expired = job.submitted_at is not None and utcnow() - job.submitted_at > TASK_LIFETIME
            if streak < 2 and not expired:
                log.info("job %s: provider says UNKNOWN; asking again", job.id, extra={"job_id": job.id})
                return False
            await ctx.fail(job, "job.failed.expired", code="UNKNOWN", release=True)
            return True
        ctx.unknown_streak.pop(job.id, None)
        if status in (TaskStatus.PENDING, TaskStatus.SUSPENDED):
            ctx.last_pending_poll[job.id] = polled_at
            if job.cancel_requested:
                await ctx.cancel_at_provider(job)
            return False
        if status is TaskStatus.RUNNING:
            if job.id not in ctx.started_mono:
                ctx.started_mono[job.id] = polled_at
                ctx.start_lo[job.id] = self._start_lower_bound(job, result, polled_at)
            if job.state is JobState.PENDING:
                job = await ctx.store.transition(job.id, JobState.RUNNING, expect=JobState.PENDING)
                ctx.emit("running", job)
            await ctx.safe_update(job)  # elapsed time and ETA; the notifier limits the edit rate
            return False
        if status is TaskStatus.SUCCEEDED:
            await self._succeeded(job, result, polled_at)
            return True
        if status is TaskStatus.CANCELED:
            job = await ctx.store.transition(job.id, JobState.CANCELED, release=True, error_key="job.canceled")
            ctx.finish(job)
            await ctx.safe(ctx.notifier.job_failed(job))
            return True
        # FAILED
        code = result.code or "Failed"
        if isinstance(result.error(), ProviderUnavailableError) and await ctx.store.provider_tasks_used(job.id) < 2:
            await self._resubmit(job, code)
            return True
        await ctx.fail(job, describe_failure(code), code=code, release=True, detail=result.message)
        return True

    async def _resubmit(self, job: Job, code: str) -> None:
        """The provider gave up on the task for its own reasons (InternalError, ModelServingError...): send the
        job once more, on the same reservation. The failed task stays recorded as the job's."""
        ctx = self._ctx
        job = await ctx.store.transition(
            job.id, JobState.QUEUED, expect=(JobState.PENDING, JobState.RUNNING),
            detail=f"task failed ({code}); sent once more", task_id=None, request_id=None, started_at=None,
        )  # fmt: skip
        ctx.forget_task(job.id)
        if job.cancel_requested:  # its member cancelled it: not sent again, not charged
            await ctx.cancel_queued(job)
            return
        ctx.counters["resubmitted_after_failure"] += 1
        log.warning("job %s: task failed with %s; sending it once more", job.id, code, extra={"job_id": job.id})
        ctx.scheduler.queue.push(QueuedJob.of(job), front=True)
        ctx.free_slot(job.id)

    async def _succeeded(self, job: Job, result: TaskResult, polled_at: float) -> None:
        ctx = self._ctx
        # Each API family reports its bill in its own field (`ApiFamily.billed_seconds`).
        billed = family_named(ctx.catalog.model(job.request.model).family).billed_seconds(result.usage)
        settlement = ctx.budget.settlement(job, billed)
        ctx.free_slot(job.id)  # the provider's slot is free now: the next job goes while we settle
        if settlement.clamped:
            ctx.counters["bills_clamped"] += 1
            log.warning(
                "job %s: the provider billed %r s for a fixed-length video; charged at most the reservation",
                job.id, billed, extra={"job_id": job.id},
            )  # fmt: skip
            await ctx.safe(ctx.notifier.owner_alert("alert.bill_clamped", job_id=job.id, billed=repr(billed)))
        now = utcnow()
        expires = now + TASK_LIFETIME
        job = await ctx.store.transition(
            job.id, JobState.SUCCEEDED, settle=settlement.cost, actual_prompt=result.actual_prompt,
            video_url_expires_at=expires, started_at=job.started_at or now,
        )  # fmt: skip
        await self._learn(job, result, polled_at, now)
        ctx.finish(job)
        ctx.emit("succeeded", job)
        await self._delivery.deliver(job, result.video_url, redelivery=False)

    async def _learn(self, job: Job, result: TaskResult, polled_at: float, now: datetime) -> None:
        """Add the task's times to its tier (model, resolution, duration) and keep them in the store, so a
        restarted bot plans its polls from what it learnt, not from the prior again."""
        ctx = self._ctx
        request = job.request
        stats = ctx.scheduler.durations_for(request.model, request.resolution, request.duration)
        queued_s, running_s = result.queued_seconds, result.running_seconds
        if not (_plausible(queued_s) and _plausible(running_s)):
            if job.submitted_at is None:
                return
            # Our poll times: off by up to a poll gap at each end.
            queued_s = max(0.0, ((job.started_at or now) - job.submitted_at).total_seconds())
            running_s = polled_at - ctx.started_mono.get(job.id, polled_at)
        assert queued_s is not None and running_s is not None
        stats.observe(queued_s, running_s)  # the provider's own times when plausible: exact
        try:
            await ctx.store.add_run_time(request.model, request.resolution, request.duration, queued_s, running_s)
        except Exception:  # learning is best effort: the job itself is settled and goes on to delivery
            log.exception("job %s: could not keep its run time", job.id, extra={"job_id": job.id})


def window_gap(at: float, window_start: float, window_end: float, gap: float, min_gap: float) -> float:
    """The gap after a poll at `at` in a task's finish window: 1.5 `gap` at the window's start, shrinking with
    the square root of the window left (a task still unfinished gets likelier to finish each second as the
    window runs out), never under `min_gap`. For a finish anywhere in the window this keeps the mean delay at
    `gap` / 2, as a steady `gap` would, with about 11 % fewer polls and a lower median delay. A window no wider
    than `gap`: the steady gap."""
    width = window_end - window_start
    if width <= gap:
        return gap
    left = max(0.0, window_end - max(at, window_start))
    return max(min_gap, 1.5 * gap * math.sqrt(left / width))


def _plausible(seconds: float | None) -> bool:
    """A provider duration worth learning from (times are untrusted: a day-long or negative one is not)."""
    return seconds is not None and math.isfinite(seconds) and 0 <= seconds <= TASK_LIFETIME.total_seconds()
