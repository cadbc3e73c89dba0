"""What the worker's parts share: configuration, the ports, per-job runtime bookkeeping and the small steps
every part takes (fail a job, free its slot, requeue it, tell the notifier)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from bot.background import BackgroundTasks
from bot.catalog import Catalog
from bot.dashscope.errors import DashScopeError
from bot.jobs.media import MediaStore
from bot.jobs.models import ChargeState, Job, JobState, Pause, PauseScope
from bot.jobs.ports import Clock, Notifier, Progress, ProviderClient
from bot.jobs.quota import BudgetService
from bot.jobs.scheduler import QueuedJob, Scheduler
from bot.jobs.store import JobStore, StaleState, utcnow
from bot.jobs.uploads import UploadCache

log = logging.getLogger(__name__)

CONTENT_CODES = frozenset({"DataInspectionFailed", "IPInfringementSuspect"})
# Task ids and results live 24 h: https://www.alibabacloud.com/help/en/model-studio/manage-asynchronous-tasks
TASK_LIFETIME = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """The worker's pacing, retry and size limits."""

    poll_min_interval: float = 1.0
    poll_max_interval: float = 30.0
    # Mean delay we aim for in noticing a finished task: polls are 2x this apart while it may be finishing
    # (the official SDK polls every 5 s, i.e. 2.5 s late on average and 4.75 s at the 95th percentile).
    detection_target_s: float = 2.25
    max_submit_attempts: int = 5  # provider 5xx before a task existed
    max_delivery_attempts: int = 8  # failed downloads of one video before its link is posted instead
    delivery_backoff_s: float = 2.0  # the first wait after a failed post; doubles up to the cap below
    # The longest wait between two posts of a video Discord refused (outage, missing permission): once Discord
    # answers again, every waiting video is posted within this (with jitter, 0.5-1x of it).
    delivery_backoff_max_s: float = 30.0
    video_keep_s: float = 7 * 86400.0  # a video not posted within this (KF2V_VIDEO_RETENTION_DAYS) is given up
    post_grace_s: float = 5.0  # how long a stop waits for a post under way to finish and be recorded
    reconcile_grace_s: float = 15.0  # how long a lost create may take to show up in the task list
    request_timeout_s: float = 30.0  # the client's timeout: a create's task is made before it runs out
    clock_skew_s: float = 120.0  # our clock vs the provider's, when placing a lost create by creation time
    max_list_pages: int = 20  # pages of 100 read per look at the task list (a busy account's neighbours)
    max_video_bytes: int = 64 * 1024 * 1024
    polls_per_second_per_account: float = 10.0  # provider allows 20 queries/s per account; keep half
    queue_refresh_s: float = 5.0  # how often queued jobs hear about their new position
    queue_watch_depth: int = 100  # beyond this position a status message says only "queued"
    max_crashes: int = 3  # unexpected exceptions in one job's work before it is failed
    crash_backoff_s: float = 1.0  # before restarting a crashed job's work (doubles each time)
    # A database fault is retried for as long as it lasts: from db_retry_base_s, doubling, capped so that
    # every waiting job notices within db_retry_max_s that the database answers again.
    db_retry_base_s: float = 0.25
    db_retry_max_s: float = 2.0


def describe_failure(code: str | None) -> str:
    """Message key for a provider failure, in the user's terms."""
    if code in CONTENT_CODES:
        return "job.failed.content"
    if code and code.startswith(("InvalidParameter", "InvalidFile", "InvalidImage", "InvalidURL", "BadRequest")):
        return "job.failed.invalid"
    return "job.failed.provider"


class RateGate:
    """Spaces out calls to at most `rate` per second (polls per account)."""

    def __init__(self, rate: float, clock: Clock) -> None:
        self._gap = 1.0 / rate
        self._next = 0.0
        self._clock = clock

    async def wait(self) -> None:
        """Return when the next call may go."""
        now = self._clock()
        at = max(now, self._next)
        self._next = at + self._gap
        if at > now:
            await asyncio.sleep(at - now)


def _new_counters() -> dict[str, int]:
    names = (
        "submissions", "throttled", "polls", "provider_errors", "malformed_answers", "bills_clamped",
        "video_urls_refused", "reconciled", "lost_creates_requeued",
        "lost_creates_given_up", "resubmitted_after_failure", "job_crashes",
        "database_faults",
    )  # fmt: skip
    return dict.fromkeys(names, 0)


@dataclass(eq=False)
class WorkerContext:
    """The ports, the shared state and the shared steps of the worker's parts (one per worker)."""

    store: JobStore
    media: MediaStore
    clients: dict[str, ProviderClient]
    catalog: Catalog
    region: str
    scheduler: Scheduler
    budget: BudgetService
    notifier: Notifier
    config: WorkerConfig
    clock: Clock
    on_event: Callable[[str, Job], None] | None = None  # metrics
    # The media family's temporary uploads (frames, audio, clips), reused while valid (issue 12).
    uploads: UploadCache | None = None
    tasks: BackgroundTasks = field(default_factory=BackgroundTasks)
    wake_event: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    # Set when a fenced write found the dispatcher lease taken over (issue 14): this process stops dispatching.
    lease_lost: asyncio.Event = field(default_factory=asyncio.Event)
    poll_gates: dict[str, RateGate] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=_new_counters)
    errors_by_code: dict[str, int] = field(default_factory=dict)
    # Per job, while the provider has its task:
    started_mono: dict[int, float] = field(default_factory=dict)  # monotonic time the provider was seen RUNNING
    last_pending_poll: dict[int, float] = field(default_factory=dict)
    start_lo: dict[int, float] = field(default_factory=dict)  # earliest monotonic time it can have started
    unknown_streak: dict[int, int] = field(default_factory=dict)  # UNKNOWN answers in a row
    malformed_logged: set[int] = field(default_factory=set)  # jobs whose unreadable answers were logged once

    def __post_init__(self) -> None:
        self.rebuild_poll_gates()

    def rebuild_poll_gates(self) -> None:
        """One poll gate per account at the configured rate (again after the config changes)."""
        rate = self.config.polls_per_second_per_account
        self.poll_gates = {name: RateGate(rate, self.clock) for name in self.clients}

    def wake(self) -> None:
        """Have the dispatcher look at the queue again."""
        self.wake_event.set()

    def free_slot(self, job_id: int) -> None:
        """The job no longer holds a provider slot: the next one may go."""
        self.scheduler.limits.forget(job_id)
        self.wake()

    def forget_task(self, job_id: int) -> None:
        """Drop what was learned about the job's provider task."""
        self.started_mono.pop(job_id, None)
        self.last_pending_poll.pop(job_id, None)
        self.start_lo.pop(job_id, None)
        self.unknown_streak.pop(job_id, None)

    def finish(self, job: Job) -> None:
        """The job's task is over: forget it and free its slot."""
        self.forget_task(job.id)
        self.free_slot(job.id)

    def progress(self, job: Job) -> Progress:
        """Where the job stands: its queue position and ETA, or its running time."""
        if job.state is JobState.QUEUED:
            position = self.scheduler.queue.positions().get(job.id)
            request = job.request
            eta = (
                self.scheduler.eta(position, request.model, request.resolution, request.duration) if position else None
            )
            held = self.scheduler.pause_for(job.guild_id)
            return Progress(position=position, eta_s=eta, paused=held.reason if held is not None else None)
        stats = self.scheduler.durations_for(job.request.model, job.request.resolution, job.request.duration)
        started = self.started_mono.get(job.id)
        if job.state is JobState.RUNNING and started is not None:
            elapsed = self.clock() - started
            return Progress(elapsed_s=elapsed, eta_s=max(0.0, stats.mean_running - elapsed))
        if job.state in (JobState.PENDING, JobState.SUBMITTING):
            return Progress(eta_s=stats.mean_queued + stats.mean_running)
        return Progress()

    def count_error(self, exc: DashScopeError) -> None:
        """Count a provider error (metrics)."""
        self.counters["provider_errors"] += 1
        self.errors_by_code[exc.code] = self.errors_by_code.get(exc.code, 0) + 1

    def emit(self, event: str, job: Job) -> None:
        """Report a lifecycle event to the metrics hook."""
        if self.on_event is not None:
            self.on_event(event, job)

    async def safe(self, awaitable: Awaitable[None]) -> None:
        """Notifications are best effort: a Discord hiccup must never stall the provider side."""
        try:
            await awaitable
        except Exception:
            log.exception("notifier call failed")

    async def safe_update(self, job: Job) -> None:
        """Refresh the job's status message (best effort)."""
        await self.safe(self.notifier.job_updated(job, self.progress(job)))

    async def fail(self, job: Job, key: str, *, code: str, release: bool = False, detail: str | None = None) -> bool:
        """Fail the job (releasing its reservation when asked and still held) and tell its member. False when
        the job had moved on meanwhile (nothing done)."""
        try:
            # `refund`: a reservation is released, and a settled job whose video was never seen gets its money back.
            job = await self.store.transition(
                job.id, JobState.FAILED, refund=release, error_code=code, error_key=key,
                error_detail=(detail or "")[:500] or None, detail=code,
            )  # fmt: skip
        except StaleState:
            return False
        log.info("job %s failed: %s", job.id, code, extra={"job_id": job.id})
        self.finish(job)
        self.emit("failed", job)
        await self.safe(self.notifier.job_failed(job))
        return True

    async def requeue(self, job: Job, why: str, *, attempted: bool = True) -> None:
        """Put a SUBMITTING job back at the front of the queue (nothing reached the provider); a job whose
        member pressed Cancel meanwhile is cancelled instead, its money released. `attempted=False`: the
        create was refused before being processed (a 429, an account problem), so it does not count against
        `max_submit_attempts` (a throttle burst must not use up the attempts that lost or failed creates get)."""
        fields = {} if attempted else {"attempts": max(0, job.attempts - 1)}
        try:
            job = await self.store.requeue_front(job.id, expect=JobState.SUBMITTING, detail=why, **fields)
        except StaleState:
            self.free_slot(job.id)
            return
        if job.cancel_requested:
            await self.cancel_queued(job)
            return
        self.scheduler.queue.push(QueuedJob.of(job), front=True)
        self.free_slot(job.id)

    async def cancel_queued(self, job: Job) -> None:
        """Cancel a QUEUED job whose Cancel came while it was being sent: released, its member told."""
        self.scheduler.queue.remove(job.id)
        try:
            job = await self.store.transition(
                job.id, JobState.CANCELED, expect=JobState.QUEUED, release=job.charge_state is ChargeState.RESERVED,
                error_key="job.canceled", detail="cancel requested while it was being sent",
            )  # fmt: skip
        except StaleState:
            self.free_slot(job.id)
            return
        log.info("job %s cancelled before being sent again", job.id, extra={"job_id": job.id})
        self.finish(job)
        self.emit("canceled", job)
        await self.safe(self.notifier.job_failed(job))

    async def account_problem(self, account: str, exc: DashScopeError) -> None:
        """Pause an account the provider refuses (bad key, arrears) and alert the owners once."""
        if account not in self.scheduler.limits.paused():
            held = Pause(PauseScope.ACCOUNT, account, exc.code, utcnow())
            self.scheduler.pause(held)
            log.error("account %s paused: %s", account, exc)
            try:  # in the database too: an owner's resume through any process reaches this dispatcher
                await self.store.save_pause(held)
            except Exception:
                log.exception("account %s: its pause could not be recorded; it holds in this process", account)
            await self.safe(self.notifier.owner_alert("alert.account_problem", account=account, code=exc.code))

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
