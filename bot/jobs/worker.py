"""Submit, poll, deliver: the loop that moves jobs through the provider, resumable from the database.

Every step writes the job's new state before the next one starts. A process killed at any line resumes
from the rows: QUEUED jobs are queued again in their original order, a SUBMITTING job (its create
answer lost) is reconciled with the provider's task list before anything is resubmitted, PENDING and
RUNNING jobs are polled again, and SUCCEEDED jobs are delivered (checking first whether an earlier
attempt already posted them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.background import BackgroundTasks
from bot.catalog import Catalog
from bot.dashscope.client import DashScopeClient
from bot.dashscope.errors import (
    AccountProblemError,
    ContentRejectedError,
    DashScopeError,
    InvalidRequestError,
    ProviderUnavailableError,
    SubmissionOutcomeUnknownError,
    ThrottledError,
)
from bot.dashscope.models import CreateTaskRequest, RequestValidationError, TaskResult, TaskStatus
from bot.jobs.media import MediaStore
from bot.jobs.models import SLOT_STATES, Job, JobState
from bot.jobs.quota import BudgetService
from bot.jobs.scheduler import QueuedJob, Scheduler
from bot.jobs.store import JobStore, StaleState, utcnow
from bot.notify import DeliveryError, Notifier, Progress, Video

log = logging.getLogger(__name__)

CONTENT_CODES = frozenset({"DataInspectionFailed", "IPInfringementSuspect"})
TASK_LIFETIME = timedelta(hours=24)
RECONCILE_CLOCK_SKEW_S = 120  # our clock vs the provider's, when matching a lost create by creation time


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    poll_min_interval: float = 1.0
    poll_max_interval: float = 30.0
    # Mean delay we aim for in noticing a finished task: polls are 2x this apart while it may be finishing
    # (the official SDK polls every 5 s, i.e. 2.5 s late on average and 4.75 s at the 95th percentile).
    detection_target_s: float = 2.25
    max_submit_attempts: int = 5  # provider 5xx before a task existed
    max_delivery_attempts: int = 8
    delivery_backoff_s: float = 2.0
    reconcile_grace_s: float = 15.0  # how long a lost create may take to show up in the task list
    max_video_bytes: int = 512 * 1024 * 1024
    polls_per_second_per_account: float = 10.0  # provider allows 20 queries/s per account; keep half
    queue_refresh_s: float = 5.0  # how often queued jobs hear about their new position
    queue_watch_depth: int = 100  # beyond this position a status message says only "queued"


def describe_failure(code: str | None) -> str:
    """Message key for a provider failure, in the user's terms."""
    if code in CONTENT_CODES:
        return "job.failed.content"
    if code and code.startswith(("InvalidParameter", "InvalidFile", "InvalidImage", "InvalidURL", "BadRequest")):
        return "job.failed.invalid"
    return "job.failed.provider"


class _RateGate:
    """Spaces out calls to at most `rate` per second (polls per account)."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self._gap = 1.0 / rate
        self._next = 0.0
        self._clock = clock

    async def wait(self) -> None:
        now = self._clock()
        at = max(now, self._next)
        self._next = at + self._gap
        if at > now:
            await asyncio.sleep(at - now)


class Worker:
    def __init__(
        self,
        *,
        store: JobStore,
        media: MediaStore,
        clients: Mapping[str, DashScopeClient],
        catalog: Catalog,
        region: str,
        scheduler: Scheduler,
        budget: BudgetService,
        notifier: Notifier,
        config: WorkerConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.media = media
        self.clients = dict(clients)
        self.catalog = catalog
        self.region = region
        self.scheduler = scheduler
        self.budget = budget
        self.notifier = notifier
        self.config = config
        self.clock = clock
        self._tasks = BackgroundTasks()
        self._wake = asyncio.Event()
        self._stopping = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._poll_gates = {name: _RateGate(config.polls_per_second_per_account, clock) for name in self.clients}
        self._started_mono: dict[int, float] = {}  # job -> monotonic time the provider was seen RUNNING
        self._last_pending_poll: dict[int, float] = {}
        self._start_lo: dict[int, float] = {}  # job -> earliest monotonic time the provider can have started it
        self.counters: dict[str, int] = {"submissions": 0, "throttled": 0, "polls": 0, "provider_errors": 0}
        self.errors_by_code: dict[str, int] = {}
        self.on_event: Callable[[str, Job], None] | None = None  # metrics hook

    # --- lifecycle -----------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._dispatcher is not None and not self._dispatcher.done()

    async def start(self) -> None:
        await self.recover()
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="kf2v-dispatcher")
        self._tasks.spawn(self._watch_queue(), "queue-watch")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking jobs; whatever is in flight stays resumable from its row."""
        self._stopping = True
        self._wake.set()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        await self._tasks.close(grace_s)

    def wake(self) -> None:
        self._wake.set()

    async def recover(self) -> None:
        """Rebuild the queue and the account bookkeeping from the database after a (re)start."""
        now_wall, now_mono = utcnow(), self.clock()
        for account, model, at in await self.store.recent_submissions(now_wall - timedelta(seconds=5)):
            self.scheduler.limits.remember_submit(account, model, now_mono - (now_wall - at).total_seconds())
        jobs = await self.store.jobs_in_states([*SLOT_STATES, JobState.QUEUED, JobState.SUCCEEDED])
        seen_tiers = {(j.model, j.resolution) for j in jobs}
        for model, resolution in seen_tiers:
            stats = self.scheduler.durations_for(model, resolution)
            for queued, running in reversed(await self.store.recent_durations(model, resolution)):
                stats.observe(queued, running)
        for job in jobs:
            if job.state is JobState.QUEUED:
                self.scheduler.queue.push(_queued(job))
                continue
            if job.state is JobState.SUCCEEDED:
                self._tasks.spawn(self._deliver(job, None, redelivery=True), f"deliver-{job.id}")
                continue
            if job.account not in self.clients:
                await self._fail(job, "job.failed.account_gone", code="AccountRemoved", release=True)
                continue
            assert job.account is not None
            self.scheduler.limits.occupy(job.account, job.model, job.id)
            if job.state is JobState.SUBMITTING:
                self.scheduler.limits.begin_submit(job.account, job.model, job.id, now_mono - 60)
                self._tasks.spawn(self._reconcile(job), f"reconcile-{job.id}")
            else:
                if job.state is JobState.RUNNING and job.started_at is not None:
                    self._started_mono[job.id] = now_mono - (now_wall - job.started_at).total_seconds()
                self._tasks.spawn(self._poll(job), f"poll-{job.id}")
        log.info("recovered %d unfinished jobs (%d queued)", len(jobs), len(self.scheduler.queue))
        self.wake()

    # --- entry points for the service layer ----------------------------------------------------------
    def enqueue(self, job: Job) -> None:
        self.scheduler.queue.push(_queued(job))
        self.wake()

    def dequeue(self, job_id: int) -> bool:
        removed = self.scheduler.queue.remove(job_id) is not None
        if removed:
            self.wake()
        return removed

    def progress(self, job: Job) -> Progress:
        if job.state is JobState.QUEUED:
            positions = self.scheduler.queue.positions()
            position = positions.get(job.id)
            eta = self.scheduler.eta(position, job.model, job.resolution) if position else None
            return Progress(position=position, eta_s=eta)
        stats = self.scheduler.durations_for(job.model, job.resolution)
        started = self._started_mono.get(job.id)
        if job.state is JobState.RUNNING and started is not None:
            elapsed = self.clock() - started
            return Progress(elapsed_s=elapsed, eta_s=max(0.0, stats.mean_running - elapsed))
        if job.state in (JobState.PENDING, JobState.SUBMITTING):
            return Progress(eta_s=stats.mean_queued + stats.mean_running)
        return Progress()

    async def cancel_at_provider(self, job: Job) -> bool:
        """Ask the provider to cancel a PENDING task. True when it was cancelled there."""
        if job.task_id is None or job.account not in self.clients:
            return False
        try:
            await self.clients[job.account].cancel_task(job.task_id)
        except DashScopeError as exc:
            log.info("provider refused to cancel job %s: %s", job.id, exc.code, extra={"job_id": job.id})
            return False
        return True

    # --- dispatch ------------------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            now = self.clock()
            while (picked := self.scheduler.next_dispatch(now)) is not None:
                queued, account = picked
                self.scheduler.limits.begin_submit(account, queued.model, queued.job_id, now)
                self._tasks.spawn(self._submit(queued, account), f"submit-{queued.job_id}")
            wake_at = self.scheduler.wake_at(now)
            timeout = None if wake_at is None else max(0.005, wake_at - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    async def _watch_queue(self) -> None:
        """Tell waiting jobs when their place in the queue moves (the notifier coalesces the edits)."""
        seen_version = -1
        last_positions: dict[int, int] = {}
        while not self._stopping:
            await asyncio.sleep(self.config.queue_refresh_s)
            queue = self.scheduler.queue
            if queue.version == seen_version:
                continue
            seen_version = queue.version
            positions = queue.positions()
            moved = [
                job_id
                for job_id, position in positions.items()
                if position <= self.config.queue_watch_depth and last_positions.get(job_id) != position
            ]
            last_positions = positions
            for job_id in moved:
                job = await self.store.get(job_id)
                if job is not None and job.state is JobState.QUEUED:
                    await self._safe_update(job)

    def _free_slot(self, job: Job | QueuedJob, account: str | None) -> None:
        if account is not None:
            job_id = job.job_id if isinstance(job, QueuedJob) else job.id
            self.scheduler.limits.release(account, job.model, job_id)
        self.wake()

    async def _submit(self, queued: QueuedJob, account: str) -> None:
        try:
            current = await self.store.get(queued.job_id)
            if current is None or current.state is not JobState.QUEUED:
                self._free_slot(queued, account)  # cancelled while it waited for its turn
                return
            job = await self.store.transition(
                queued.job_id, JobState.SUBMITTING, expect=JobState.QUEUED, account=account,
                attempts=current.attempts + 1,
            )  # fmt: skip
        except StaleState:
            self._free_slot(queued, account)
            return
        await self._send(job, account)

    async def _send(self, job: Job, account: str) -> None:
        client = self.clients[account]
        try:
            request = await asyncio.to_thread(self._build_request, job)
        except (RequestValidationError, OSError, KeyError) as exc:
            log.error("job %s cannot be sent: %s", job.id, exc, extra={"job_id": job.id})
            await self._fail(job, "job.failed.invalid", code="LocalValidation", release=True, account=account)
            return
        self.counters["submissions"] += 1
        self.scheduler.limits.mark_sent(account, job.model, self.clock())  # the rate window counts from here
        try:
            created = await client.create_task(request)
        except ThrottledError as exc:
            self.counters["throttled"] += 1
            self._count_error(exc)
            delay = self.scheduler.limits.throttled(account, job.model, self.clock())
            log.warning(
                "throttled (%s); %s/%s cools down %.0fs, job %s back to the front",
                exc.code, account, job.model, delay, job.id, extra={"job_id": job.id},
            )  # fmt: skip
            await self._requeue(job, account, "throttled")
        except AccountProblemError as exc:
            self._count_error(exc)
            await self._account_problem(account, exc)
            await self._requeue(job, account, f"account problem {exc.code}")
        except SubmissionOutcomeUnknownError as exc:
            self._count_error(exc)
            log.warning("job %s: create answer lost (%s); reconciling", job.id, exc.code, extra={"job_id": job.id})
            await self._reconcile(job)
        except ContentRejectedError as exc:
            self._count_error(exc)
            await self._fail(job, "job.failed.content", code=exc.code, release=True, account=account)
        except InvalidRequestError as exc:
            self._count_error(exc)
            await self._fail(job, "job.failed.invalid", code=exc.code, release=True, account=account,
                             detail=exc.message)  # fmt: skip
        except (ProviderUnavailableError, DashScopeError) as exc:
            self._count_error(exc)
            if job.attempts >= self.config.max_submit_attempts:
                await self._fail(job, "job.failed.provider", code=exc.code, release=True, account=account)
            else:
                self.scheduler.limits.throttled(account, job.model, self.clock())
                await self._requeue(job, account, f"provider error {exc.code}")
        else:
            self.scheduler.limits.succeeded(account, job.model)
            await self._accepted(job, account, created.task_id, created.request_id, fresh=True)

    def _build_request(self, job: Job) -> CreateTaskRequest:
        def uri(ref: str) -> str:
            return f"data:{self.media.mime_of(ref)};base64,{base64.b64encode(self.media.read_frame(ref)).decode()}"

        return CreateTaskRequest.build(
            self.catalog,
            self.region,
            model_key=job.model,
            resolution=job.resolution,
            prompt=job.prompt or None,
            negative_prompt=job.negative_prompt,
            first_frame_uri=uri(job.first_frame),
            last_frame_uri=uri(job.last_frame) if job.last_frame else None,
            prompt_extend=job.prompt_extend,
            seed=job.seed,
            template=job.template,
        )

    async def _accepted(
        self, job: Job, account: str, task_id: str, request_id: str | None, *, fresh: bool = False
    ) -> None:
        """`fresh`: the create's own answer (PENDING) just came, so the first poll can wait for the planner."""
        job = await self.store.transition(
            job.id, JobState.PENDING, expect=JobState.SUBMITTING, task_id=task_id, request_id=request_id
        )
        self.scheduler.limits.end_submit(account, job.id)
        self.wake()
        log.info("job %s submitted as task %s", job.id, task_id, extra={"job_id": job.id, "task_id": task_id})
        self._emit("submitted", job)
        await self._safe_update(job)
        if job.cancel_requested and await self.cancel_at_provider(job):
            pass  # the poll below sees CANCELED and releases the budget
        self._tasks.spawn(self._poll(job, fresh=fresh and not job.cancel_requested), f"poll-{job.id}")

    async def _requeue(self, job: Job, account: str, why: str) -> None:
        try:
            job = await self.store.requeue_front(job.id, expect=JobState.SUBMITTING, detail=why)
        except StaleState:
            self._free_slot(job, account)
            return
        self.scheduler.queue.push(_queued(job), front=True)
        self._free_slot(job, account)

    async def _account_problem(self, account: str, exc: DashScopeError) -> None:
        if account not in self.scheduler.limits.paused():
            self.scheduler.limits.pause(account, exc.code)
            log.error("account %s paused: %s", account, exc)
            await self._safe(self.notifier.owner_alert("alert.account_problem", account=account, code=exc.code))

    def resume_account(self, account: str) -> None:
        self.scheduler.limits.resume(account)
        self.wake()

    # --- reconcile a lost create ---------------------------------------------------------------------
    async def _reconcile(self, job: Job) -> None:
        assert job.account is not None and job.submitted_at is not None
        account = job.account
        client = self.clients[account]
        provider_model = self.catalog.provider_name(job.model, self.region)
        started = self.clock()
        backoff = 1.0
        while not self._stopping:
            # The list's start/end zone is unconfirmed (UTC+8 assumed), so ask a day either side and match on
            # gmt_create, which is epoch milliseconds and means the same everywhere.
            window_start = job.submitted_at - timedelta(days=1)
            window_end = utcnow() + timedelta(days=1)
            earliest = job.submitted_at - timedelta(seconds=RECONCILE_CLOCK_SKEW_S)
            try:
                candidates = []
                page_no = 1
                while True:
                    page = await client.list_tasks(
                        start=window_start, end=window_end, model_name=provider_model, page_no=page_no, page_size=100
                    )
                    for summary in page.data:
                        created = summary.created_at
                        if created is not None and created < earliest:
                            continue
                        if not await self.store.task_id_known(summary.task_id):
                            candidates.append(summary)
                    if page_no >= (page.total_page or 1):
                        break
                    page_no += 1
            except DashScopeError as exc:
                self._count_error(exc)
                log.warning("job %s: task list unavailable (%s); retrying", job.id, exc.code, extra={"job_id": job.id})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if candidates:
                # One outstanding create per account: an unknown task in the window is ours.
                task = candidates[0]
                log.info("job %s reconciled with task %s", job.id, task.task_id, extra={"job_id": job.id})
                await self._accepted(job, account, task.task_id, task.request_id)
                return
            if self.clock() - started >= self.config.reconcile_grace_s:
                log.info("job %s never reached the provider; queued again", job.id, extra={"job_id": job.id})
                await self._requeue(job, account, "create lost before the provider")
                return
            await asyncio.sleep(min(backoff, self.config.reconcile_grace_s / 4))
            backoff = min(backoff * 2, 10.0)

    # --- polling -------------------------------------------------------------------------------------
    def _next_poll_delay(self, job: Job, previous_poll: float) -> float:
        """Seconds until this job's next poll. Only the finish matters; the start only narrows where it can be.

        * Waiting in the provider's queue: every sqrt(2 x gap x mean queued time), which balances polls
          spent while it waits against the start uncertainty they leave (that widens the finish window),
          and never more than the shortest run time (nothing can finish sooner after starting).
        * Running, started no earlier than `start_lo`: the finish lies in [start_lo + r_lo, started + r_hi]
          (the tier's learned run-time bounds). Sleep until one gap into that window, then poll every gap
          (2 x detection_target_s), so a finish is noticed detection_target_s late on average.
        * Later than ever seen: back off gently.
        Gaps are counted from the previous poll's start (handling its answer does not stretch the cadence)
        and stay within [poll_min_interval, poll_max_interval].
        """
        cfg = self.config
        lo_gap, hi_gap = cfg.poll_min_interval, cfg.poll_max_interval
        now = self.clock()

        def after_previous(seconds: float) -> float:
            return max(0.0, previous_poll + max(lo_gap, min(hi_gap, seconds)) - now)

        stats = self.scheduler.durations_for(job.model, job.resolution)
        r_lo, r_hi = stats.running_bounds()
        gap = max(lo_gap, 2 * cfg.detection_target_s)
        started = self._started_mono.get(job.id)
        if started is None:
            return after_previous(min(math.sqrt(2 * gap * stats.mean_queued), r_lo))
        window_start = self._start_lo.get(job.id, started) + r_lo
        window_end = started + r_hi
        if now < window_start:
            return after_previous(window_start + gap - previous_poll)
        if now <= window_end:
            return after_previous(gap)
        overdue = now - window_end  # later than ever seen: back off gently
        return after_previous(gap + overdue / 4)

    def _start_lower_bound(self, job: Job, result: TaskResult, polled_at: float) -> float:
        """The earliest monotonic time the provider can have started a task first seen RUNNING at `polled_at`.

        After our submit and its last PENDING poll; and when the answer carries the provider's submit and start
        times (their difference is the time it waited, free of clock skew), after our submit plus that wait.
        """
        submitted = None if job.submitted_at is None else polled_at - (utcnow() - job.submitted_at).total_seconds()
        bounds = [t for t in (self._last_pending_poll.get(job.id), submitted) if t is not None]
        waited = result.queued_seconds
        if waited is not None and submitted is not None:
            bounds.append(submitted + waited)
        return min(polled_at, max(bounds)) if bounds else polled_at

    async def _poll(self, job: Job, *, fresh: bool = False) -> None:
        assert job.task_id is not None and job.account is not None
        client = self.clients[job.account]
        gate = self._poll_gates[job.account]
        last = self.clock()
        errors = 0
        first = not fresh  # a resumed or reconciled task is asked about at once
        while not self._stopping:
            delay = 0.0 if first else self._next_poll_delay(job, last)
            first = False
            if errors:
                delay = max(delay, min(self.config.poll_max_interval, self.config.poll_min_interval * 2**errors))
            await asyncio.sleep(delay)
            await gate.wait()
            if job.submitted_at is not None and utcnow() - job.submitted_at > TASK_LIFETIME:
                await self._fail(job, "job.failed.expired", code="TaskExpired", release=True, account=job.account)
                return
            polled_at = self.clock()
            self.counters["polls"] += 1
            try:
                result = await client.get_task(job.task_id)
            except AccountProblemError as exc:
                self._count_error(exc)
                await self._account_problem(job.account, exc)
                errors += 1
                continue
            except DashScopeError as exc:
                self._count_error(exc)
                errors += 1
                log.info("poll of job %s failed (%s); retrying", job.id, exc.code, extra={"job_id": job.id})
                continue
            errors = 0
            last = polled_at
            refreshed = await self.store.get(job.id)
            if refreshed is None or refreshed.is_final:
                self._free_slot(job, job.account)
                return
            job = refreshed
            done = await self._on_status(job, result, polled_at)
            if done:
                return

    async def _on_status(self, job: Job, result: TaskResult, polled_at: float) -> bool:
        status = result.status
        if status in (TaskStatus.PENDING, TaskStatus.SUSPENDED):
            self._last_pending_poll[job.id] = polled_at
            if job.cancel_requested:
                await self.cancel_at_provider(job)
            return False
        if status is TaskStatus.RUNNING:
            if job.id not in self._started_mono:
                self._started_mono[job.id] = polled_at
                self._start_lo[job.id] = self._start_lower_bound(job, result, polled_at)
            if job.state is JobState.PENDING:
                job = await self.store.transition(job.id, JobState.RUNNING, expect=JobState.PENDING)
                self._emit("running", job)
            await self._safe_update(job)  # elapsed time and ETA; the notifier limits the edit rate
            return False
        if status is TaskStatus.SUCCEEDED:
            await self._succeeded(job, result, polled_at)
            return True
        if status is TaskStatus.CANCELED:
            job = await self.store.transition(job.id, JobState.CANCELED, release=True, error_key="job.canceled")
            self._finish(job)
            await self._safe(self.notifier.job_failed(job))
            return True
        if status is TaskStatus.UNKNOWN:
            await self._fail(job, "job.failed.expired", code="UNKNOWN", release=True, account=job.account)
            return True
        # FAILED
        code = result.code or "Failed"
        await self._fail(job, describe_failure(code), code=code, release=True, account=job.account,
                         detail=result.message)  # fmt: skip
        return True

    async def _succeeded(self, job: Job, result: TaskResult, polled_at: float) -> None:
        self._free_slot(job, job.account)  # the provider's slot is free now: the next job goes while we settle
        cost = self.budget.actual_cost(job, result.billed_seconds)
        now = utcnow()
        expires = now + TASK_LIFETIME
        job = await self.store.transition(
            job.id, JobState.SUCCEEDED, settle=cost, actual_prompt=result.actual_prompt,
            video_url_expires_at=expires, started_at=job.started_at or now,
        )  # fmt: skip
        stats = self.scheduler.durations_for(job.model, job.resolution)
        if result.queued_seconds is not None and result.running_seconds is not None:
            stats.observe(result.queued_seconds, result.running_seconds)  # the provider's own times: exact
        elif job.submitted_at is not None:  # our poll times: off by up to a poll gap at each end
            started = self._started_mono.get(job.id, polled_at)
            queued_s = max(0.0, ((job.started_at or now) - job.submitted_at).total_seconds())
            stats.observe(queued_s, polled_at - started)
        self._finish(job)
        self._emit("succeeded", job)
        await self._deliver(job, result.video_url, redelivery=False)

    def _finish(self, job: Job) -> None:
        self._started_mono.pop(job.id, None)
        self._last_pending_poll.pop(job.id, None)
        self._start_lo.pop(job.id, None)
        self._free_slot(job, job.account)

    # --- delivery ------------------------------------------------------------------------------------
    async def _deliver(self, job: Job, url: str | None, *, redelivery: bool) -> None:
        path = self.media.video_path(job.id)
        for attempt in range(self.config.max_delivery_attempts):
            try:
                if not path.exists():
                    if url is None:
                        url = await self._fresh_video_url(job)
                    if url is None:
                        await self._fail(job, "job.failed.video_lost", code="VideoUnavailable")
                        return
                    size = await self.clients[job.account or ""].download_video(
                        url, path, max_bytes=self.config.max_video_bytes
                    )
                    job = await self.store.update(job.id, video_path=str(path))
                else:
                    size = path.stat().st_size
                video = Video(path=path, size=size, url=url, url_expires_at=job.video_url_expires_at)
                await self.notifier.deliver(job, video, redelivery=redelivery or attempt > 0)
            except DeliveryError as exc:
                if exc.permanent:
                    log.error("job %s cannot be delivered: %s", job.id, exc.reason, extra={"job_id": job.id})
                    await self._fail(job, "job.failed.undeliverable", code="Undeliverable")
                    return
                log.warning("delivery of job %s failed (%s); retrying", job.id, exc.reason, extra={"job_id": job.id})
            except DashScopeError as exc:
                self._count_error(exc)
                log.warning("download of job %s failed (%s); retrying", job.id, exc.code, extra={"job_id": job.id})
                url = None  # ask for a fresh link next time
            except Exception:
                log.exception("delivery of job %s crashed; retrying", job.id, extra={"job_id": job.id})
            else:
                job = await self.store.transition(job.id, JobState.DELIVERED, expect=JobState.SUCCEEDED)
                log.info("job %s delivered", job.id, extra={"job_id": job.id})
                self._emit("delivered", job)
                await self._safe_update(job)
                return
            job = await self.store.update(job.id, delivery_attempts=job.delivery_attempts + 1)
            await asyncio.sleep(self.config.delivery_backoff_s * 2**attempt * (0.5 + random.random()))  # noqa: S311
        await self._fail(job, "job.failed.undeliverable", code="DeliveryRetriesExhausted")

    async def _fresh_video_url(self, job: Job) -> str | None:
        if job.task_id is None or job.account not in self.clients:
            return None
        result = await self.clients[job.account].get_task(job.task_id)
        if result.status is TaskStatus.SUCCEEDED and result.video_url:
            return result.video_url
        return None

    # --- failure -------------------------------------------------------------------------------------
    async def _fail(
        self,
        job: Job,
        key: str,
        *,
        code: str,
        release: bool = False,
        account: str | None = None,
        detail: str | None = None,
    ) -> None:
        try:
            job = await self.store.transition(
                job.id, JobState.FAILED, release=release and job.charge_state.value == "reserved",
                error_code=code, error_key=key, error_detail=(detail or "")[:500] or None, detail=code,
            )  # fmt: skip
        except StaleState:
            return
        log.info("job %s failed: %s", job.id, code, extra={"job_id": job.id})
        self._finish(job)
        self._emit("failed", job)
        await self._safe(self.notifier.job_failed(job))

    # --- helpers -------------------------------------------------------------------------------------
    def _count_error(self, exc: DashScopeError) -> None:
        self.counters["provider_errors"] += 1
        self.errors_by_code[exc.code] = self.errors_by_code.get(exc.code, 0) + 1

    def _emit(self, event: str, job: Job) -> None:
        if self.on_event is not None:
            self.on_event(event, job)

    async def _safe_update(self, job: Job) -> None:
        await self._safe(self.notifier.job_updated(job, self.progress(job)))

    async def _safe(self, awaitable: Any) -> None:
        """Notifications are best effort: a Discord hiccup must never stall the provider side."""
        try:
            await awaitable
        except Exception:
            log.exception("notifier call failed")


def _queued(job: Job) -> QueuedJob:
    return QueuedJob(job.id, job.guild_id, job.user_id, job.model, job.resolution, job.queue_seq)


def utc_from_provider(value: str | None) -> datetime | None:
    """Provider times are 'YYYY-MM-DD HH:mm:ss.SSS' in China time (UTC+8)."""
    if not value:
        return None
    try:
        naive = datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f")
    except ValueError:
        return None
    return (naive - timedelta(hours=8)).replace(tzinfo=UTC)
