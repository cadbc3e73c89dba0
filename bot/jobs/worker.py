"""Submit, poll, deliver: the loop that moves jobs through the provider, resumable from the database.

Every step writes the job's new state before the next one starts. A process killed at any line resumes
from the rows: QUEUED jobs are queued again in their original order, a SUBMITTING job (its create
answer lost) is reconciled with the provider's task list before anything is resubmitted, PENDING and
RUNNING jobs are polled again, and SUCCEEDED jobs are delivered (checking first whether an earlier
attempt already posted them).

Everything the provider sends is untrusted: an unreadable answer is a temporary error, never a verdict; a
bill is clamped to what the catalog says a video costs; a video is fetched only from the provider's storage
(the client checks the URL); a listed task is adopted only when it is provably this job's. Each job's work
runs under a supervisor: a bug restarts that job's work from its row and, after a few crashes, fails it
with its money released, instead of leaving it stuck.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import random
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.background import BackgroundTasks
from bot.catalog import Catalog
from bot.dashscope.client import DashScopeClient
from bot.dashscope.errors import (
    AccountProblemError,
    ContentRejectedError,
    DashScopeError,
    ForeignVideoUrlError,
    InvalidRequestError,
    MalformedAnswerError,
    NotAVideoError,
    ProviderUnavailableError,
    SubmissionOutcomeUnknownError,
    ThrottledError,
    VideoTooLargeError,
)
from bot.dashscope.models import CreateTaskRequest, RequestValidationError, TaskResult, TaskStatus, TaskSummary
from bot.jobs.media import MediaStore
from bot.jobs.models import SLOT_STATES, Job, JobState
from bot.jobs.ports import DeliveryError, Notifier, Progress, Video
from bot.jobs.quota import BudgetService
from bot.jobs.scheduler import QueuedJob, Scheduler
from bot.jobs.store import JobStore, StaleState, utcnow

log = logging.getLogger(__name__)

CONTENT_CODES = frozenset({"DataInspectionFailed", "IPInfringementSuspect"})
# Task ids and results live 24 h: https://www.alibabacloud.com/help/en/model-studio/manage-asynchronous-tasks
TASK_LIFETIME = timedelta(hours=24)
# Asked around a lost create's possible creation times, on top of them (the list's own rounding to seconds).
LIST_MARGIN = timedelta(minutes=1)
# The client writes the list's bounds in UTC+8 (`LIST_TZ`), which no page we could read confirms. Should the
# service read them as UTC instead, a narrow window would miss our task and a lost create would be paid
# twice; so the window is also asked for as the other reading would place it (8 h earlier). Rows are matched
# on `gmt_create` (epoch ms, zone-free), so the extra rows cost a page, never a wrong match.
LIST_ZONE_READINGS = (timedelta(0), timedelta(hours=-8))
LIST_PAGE_SIZE = 100  # the list's largest page


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
    request_timeout_s: float = 30.0  # the client's timeout: a create's task is made before it runs out
    clock_skew_s: float = 120.0  # our clock vs the provider's, when placing a lost create by creation time
    max_list_pages: int = 20  # pages of 100 read per look at the task list (a busy account's neighbours)
    max_video_bytes: int = 64 * 1024 * 1024
    polls_per_second_per_account: float = 10.0  # provider allows 20 queries/s per account; keep half
    queue_refresh_s: float = 5.0  # how often queued jobs hear about their new position
    queue_watch_depth: int = 100  # beyond this position a status message says only "queued"
    max_crashes: int = 3  # unexpected exceptions in one job's work before it is failed
    crash_backoff_s: float = 1.0  # before restarting a crashed job's work (doubles each time)


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
        events: Callable[[str, Job], None] | None = None,
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
        self._unknown_streak: dict[int, int] = {}  # job -> UNKNOWN answers in a row
        self._malformed_logged: set[int] = set()  # jobs whose unreadable answers were logged once
        self._crashes: dict[int, int] = {}
        self._key_ids: dict[str, str] = {}  # account -> the api_key_id its tasks carry in the task list
        self._learning: set[str] = set()  # accounts whose api_key_id is being looked up
        self._adopt_locks: dict[str, asyncio.Lock] = {}
        self.counters: dict[str, int] = {
            "submissions": 0,
            "throttled": 0,
            "polls": 0,
            "provider_errors": 0,
            "malformed_answers": 0,
            "bills_clamped": 0,
            "video_urls_refused": 0,
            "reconciled": 0,
            "lost_creates_requeued": 0,
            "resubmitted_after_failure": 0,
            "job_crashes": 0,
        }
        self.errors_by_code: dict[str, int] = {}
        self.on_event = events  # job lifecycle events (the metrics), given at construction

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
            await self._resume(job)
        log.info("recovered %d unfinished jobs (%d queued)", len(jobs), len(self.scheduler.queue))
        self.wake()

    async def _resume(self, job: Job) -> None:
        """Pick up a job's work from its row: after a start, or after its work crashed."""
        if job.state is JobState.QUEUED:
            self.scheduler.limits.forget(job.id)
            self.scheduler.queue.push(_queued(job))
            self.wake()
            return
        if job.state is JobState.SUCCEEDED:
            self._run(job.id, "deliver", self._deliver(job, None, redelivery=True))
            return
        if job.account not in self.clients:
            await self._fail(job, "job.failed.account_gone", code="AccountRemoved", release=True)
            return
        assert job.account is not None
        self.scheduler.limits.occupy(job.account, job.model, job.id)
        # No create of this job is in the air any more (a crash may have left its marker, which would keep
        # other lost answers on the lane from being decided).
        self.scheduler.limits.end_submit(job.account, job.id)
        if job.state is JobState.SUBMITTING:
            self._run(job.id, "reconcile", self._reconcile(job))
            return
        if job.state is JobState.RUNNING and job.started_at is not None and job.id not in self._started_mono:
            self._started_mono[job.id] = self.clock() - (utcnow() - job.started_at).total_seconds()
        self._run(job.id, "poll", self._poll(job))

    # --- supervision ---------------------------------------------------------------------------------
    def _run(self, job_id: int, kind: str, work: Coroutine[Any, Any, None]) -> None:
        """Start one job's work under the supervisor."""
        self._tasks.spawn(self._supervised(job_id, kind, work), f"{kind}-{job_id}")

    async def _supervised(self, job_id: int, kind: str, work: Coroutine[Any, Any, None]) -> None:
        """Run `work`; on an unexpected exception resume the job from its row with backoff, and after
        `max_crashes` crashes fail it with its money released. The log has the trace and a reference id."""
        try:
            await work
            return
        except Exception:
            crashes = self._crashes[job_id] = self._crashes.get(job_id, 0) + 1
            ref = secrets.token_hex(4)
            self.counters["job_crashes"] += 1
            log.exception(
                "job %s: %s crashed (crash %d of %d, ref %s)", job_id, kind, crashes, self.config.max_crashes, ref,
                extra={"job_id": job_id, "ref": ref},
            )  # fmt: skip
        try:
            if crashes >= self.config.max_crashes:
                await self._give_up_crashed(job_id, ref)
                return
            await asyncio.sleep(self.config.crash_backoff_s * 2 ** (crashes - 1))
            job = await self.store.get(job_id)
            if job is not None and not job.is_final and not self._stopping:
                await self._resume(job)
        except Exception:
            log.exception("job %s: recovery after a crash failed (ref %s); it resumes at the next start", job_id, ref)

    async def _give_up_crashed(self, job_id: int, ref: str) -> None:
        job = await self.store.get(job_id)
        if job is None or job.is_final:
            return
        log.error("job %s failed after %d crashes (ref %s)", job_id, self.config.max_crashes, ref,
                  extra={"job_id": job_id, "ref": ref})  # fmt: skip
        await self._fail(job, "job.failed.internal", code="InternalCrash", release=True, detail=f"ref {ref}")
        await self._safe(self.notifier.owner_alert("alert.job_crashed", job_id=job_id, ref=ref))

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
                self._run(queued.job_id, "submit", self._submit(queued, account))
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

    def _free_slot(self, job_id: int) -> None:
        self.scheduler.limits.forget(job_id)
        self.wake()

    async def _submit(self, queued: QueuedJob, account: str) -> None:
        try:
            current = await self.store.get(queued.job_id)
            if current is None or current.state is not JobState.QUEUED:
                self._free_slot(queued.job_id)  # cancelled while it waited for its turn
                return
            # Marked SUBMITTING in the order jobs were picked; the create leaves once its body is built (well
            # inside the clock skew a lost answer's task is looked for with).
            job = await self.store.transition(
                queued.job_id, JobState.SUBMITTING, expect=JobState.QUEUED, account=account,
                attempts=current.attempts + 1,
            )  # fmt: skip
        except StaleState:
            self._free_slot(queued.job_id)
            return
        try:
            request = await asyncio.to_thread(self._build_request, job)
        except (RequestValidationError, OSError, KeyError) as exc:
            log.error("job %s cannot be sent: %s", job.id, exc, extra={"job_id": job.id})
            await self._fail(job, "job.failed.invalid", code="LocalValidation", release=True)
            return
        await self._send(job, account, request)

    async def _send(self, job: Job, account: str, request: CreateTaskRequest) -> None:
        client = self.clients[account]
        self.counters["submissions"] += 1
        self.scheduler.limits.mark_sent(account, job.model, job.id, self.clock())  # the rate window counts from here
        try:
            created = await client.create_task(request)
        except DashScopeError as exc:
            self.scheduler.limits.end_submit(account, job.id)
            self._count_error(exc)
            await self._create_refused(job, account, exc)
            return
        self.scheduler.limits.end_submit(account, job.id)
        self.scheduler.limits.succeeded(account, job.model)
        await self._accepted(job, account, created.task_id, created.request_id, fresh=True)

    async def _create_refused(self, job: Job, account: str, exc: DashScopeError) -> None:
        if isinstance(exc, ThrottledError):
            self.counters["throttled"] += 1
            delay = self.scheduler.limits.throttled(account, job.model, self.clock())
            log.warning(
                "throttled (%s); %s/%s cools down %.0fs, job %s back to the front",
                exc.code, account, job.model, delay, job.id, extra={"job_id": job.id},
            )  # fmt: skip
            await self._requeue(job, "throttled")
        elif isinstance(exc, AccountProblemError):
            await self._account_problem(account, exc)
            await self._requeue(job, f"account problem {exc.code}")
        elif isinstance(exc, SubmissionOutcomeUnknownError):
            log.warning("job %s: create answer lost (%s); reconciling", job.id, exc.code, extra={"job_id": job.id})
            await self._reconcile(job, lost_at=utcnow())
        elif isinstance(exc, ContentRejectedError):
            await self._fail(job, "job.failed.content", code=exc.code, release=True)
        elif isinstance(exc, InvalidRequestError):
            await self._fail(job, "job.failed.invalid", code=exc.code, release=True, detail=exc.message)
        elif job.attempts >= self.config.max_submit_attempts:
            await self._fail(job, "job.failed.provider", code=exc.code, release=True)
        else:  # ProviderUnavailableError and unknown codes: nothing was created
            self.scheduler.limits.throttled(account, job.model, self.clock())
            await self._requeue(job, f"provider error {exc.code}")

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
        await self._after_accepted(job, account, fresh=fresh)

    async def _after_accepted(self, job: Job, account: str, *, fresh: bool) -> None:
        assert job.task_id is not None
        self.wake()
        log.info("job %s submitted as task %s", job.id, job.task_id, extra={"job_id": job.id, "task_id": job.task_id})
        self._emit("submitted", job)
        await self._safe_update(job)
        if fresh and account not in self._key_ids and job.submitted_at is not None:
            provider_model = self.catalog.provider_name(job.model, self.region)
            self._learn_key_id_soon(account, provider_model, job.task_id, job.submitted_at)
        if job.cancel_requested and await self.cancel_at_provider(job):
            pass  # the poll below sees CANCELED and releases the budget
        self._run(job.id, "poll", self._poll(job, fresh=fresh and not job.cancel_requested))

    async def _requeue(self, job: Job, why: str) -> None:
        try:
            job = await self.store.requeue_front(job.id, expect=JobState.SUBMITTING, detail=why)
        except StaleState:
            self._free_slot(job.id)
            return
        self.scheduler.queue.push(_queued(job), front=True)
        self._free_slot(job.id)

    async def _account_problem(self, account: str, exc: DashScopeError) -> None:
        if account not in self.scheduler.limits.paused():
            self.scheduler.limits.pause(account, exc.code)
            log.error("account %s paused: %s", account, exc)
            await self._safe(self.notifier.owner_alert("alert.account_problem", account=account, code=exc.code))

    def resume_account(self, account: str) -> None:
        self.scheduler.limits.resume(account)
        self.wake()

    # --- reconcile a lost create ---------------------------------------------------------------------
    async def _reconcile(self, job: Job, *, lost_at: datetime | None = None) -> None:
        """A create was sent and its answer lost: find the task it made, if any, before anything else.

        A listed task is this job's only when it is provably so: created by our key (its `api_key_id`,
        learned from list rows of tasks we know), of the model, within [sent - skew, sent + request timeout
        + skew] by the provider's clock, and no job's already. Where that leaves several, or our key's id is
        not known yet, each candidate is polled and what it echoes (`orig_prompt`) compared with the job.
        The job is sent again only once the list, read completely at least `reconcile_grace_s` after the
        answer was lost, shows nothing that could be it; while a task of ours may exist, it waits (holding
        its slot, not the account). After the task lifetime nobody can know any more: it fails, released.
        """
        assert job.account is not None and job.submitted_at is not None
        account, sent, cfg = job.account, job.submitted_at, self.config
        client = self.clients[account]
        provider_model = self.catalog.provider_name(job.model, self.region)
        skew, timeout = timedelta(seconds=cfg.clock_skew_s), timedelta(seconds=cfg.request_timeout_s)
        earliest, latest = sent - skew, sent + timeout + skew
        if lost_at is None:  # resumed after a restart: the answer was lost by the time the request timed out
            lost_at = min(utcnow(), sent + timeout)
        provable_from = lost_at + timedelta(seconds=cfg.reconcile_grace_s)
        not_ours: set[str] = set()  # candidates whose echo showed they belong to someone else
        delay = 1.0
        while not self._stopping:
            if utcnow() - sent > TASK_LIFETIME:
                await self._lost_for_good(job)
                return
            read_at = utcnow()
            try:
                rows, complete = await self._list_created(client, provider_model, earliest, latest)
            except DashScopeError as exc:
                self._count_error(exc)
                log.warning("job %s: task list unavailable (%s); retrying", job.id, exc.code, extra={"job_id": job.id})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            key_id = await self._known_key_id(account, rows)
            candidates = []
            for row in rows:
                if row.task_id in not_ours or not _could_be(row, key_id, provider_model, earliest, latest):
                    continue
                if await self.store.task_owner(row.task_id) is None:
                    candidates.append(row)
            if candidates:
                own = await self._pick_own(job, account, candidates, key_id, not_ours)
                if own is not None and await self._adopt(job, account, own, key_id):
                    return
            elif complete and read_at >= provable_from:
                self.counters["lost_creates_requeued"] += 1
                log.info("job %s never reached the provider; queued again", job.id, extra={"job_id": job.id})
                await self._requeue(job, "create lost before the provider")
                return
            pause = cfg.poll_max_interval if candidates else cfg.reconcile_grace_s / 4
            await asyncio.sleep(min(delay, pause))
            delay = min(delay * 2, 30.0)

    async def _list_created(
        self, client: DashScopeClient, model: str, earliest: datetime, latest: datetime
    ) -> tuple[list[TaskSummary], bool]:
        """Listed tasks of `model` created around [earliest, latest] (far less than the list's 24 h limit),
        and whether every page was read."""
        rows: dict[str, TaskSummary] = {}
        complete = True
        for shift in LIST_ZONE_READINGS:
            for page_no in range(1, self.config.max_list_pages + 1):
                page = await client.list_tasks(
                    start=earliest - LIST_MARGIN + shift, end=latest + LIST_MARGIN + shift, model_name=model,
                    page_no=page_no, page_size=LIST_PAGE_SIZE,
                )  # fmt: skip
                rows.update((row.task_id, row) for row in page.data)
                if not page.data or page_no >= page.total_page:
                    break
            else:
                complete = False
        return list(rows.values()), complete

    async def _pick_own(
        self, job: Job, account: str, candidates: list[TaskSummary], key_id: str | None, not_ours: set[str]
    ) -> TaskSummary | None:
        """The candidate that is provably this job's, or None to look again later."""
        lane_busy = self.scheduler.limits.outstanding_creates(account, job.model) - {job.id}
        if lane_busy:
            # Another create of ours is in the air: its task may be listed already with no owner yet. Decide
            # once its answer has come (at most a request timeout away).
            return None
        if key_id is not None and len(candidates) == 1:
            return candidates[0]
        confirmed: list[TaskSummary] = []
        silent: list[TaskSummary] = []  # finished without echoing anything to compare
        gate = self._poll_gates[account]
        for row in candidates:
            await gate.wait()
            try:
                result = await self.clients[account].get_task(row.task_id)
            except DashScopeError as exc:
                self._count_error(exc)
                if isinstance(exc, MalformedAnswerError):
                    self.counters["malformed_answers"] += 1
                return None  # an incomplete picture: ask again later
            verdict = _echo_matches(job, result)
            if verdict is False:
                not_ours.add(row.task_id)
            elif verdict:
                confirmed.append(row)
            elif result.status.is_final:
                silent.append(row)
            else:
                return None  # still PENDING or RUNNING: it echoes the prompt once it succeeds
        sent = job.submitted_at
        assert sent is not None
        closest = _closest_to(sent)
        if confirmed:
            return min(confirmed, key=closest)
        if key_id is not None and silent:
            # Ours (our key) and finished without saying whose: the same key's tasks differ only by job, and
            # a finished task without an echo did not make a video to show anyone.
            return min(silent, key=closest)
        return None

    async def _adopt(self, job: Job, account: str, row: TaskSummary, key_id: str | None) -> bool:
        lock = self._adopt_locks.setdefault(account, asyncio.Lock())
        async with lock:
            if await self.store.task_owner(row.task_id) is not None:
                return False  # another job's reconciliation took it a moment ago
            job = await self.store.transition(
                job.id, JobState.PENDING, expect=JobState.SUBMITTING, task_id=row.task_id, request_id=row.request_id
            )
        if key_id is None and row.api_key_id:
            await self._remember_key_id(account, row.api_key_id)  # confirmed by its echo: our key's id
        self.counters["reconciled"] += 1
        log.info("job %s reconciled with task %s", job.id, row.task_id, extra={"job_id": job.id})
        await self._after_accepted(job, account, fresh=False)
        return True

    async def _lost_for_good(self, job: Job) -> None:
        log.error(
            "job %s: its create answer was lost and no task could be proved its within the task lifetime; failed",
            job.id, extra={"job_id": job.id},
        )  # fmt: skip
        await self._fail(job, "job.failed.lost", code="ReconcileGaveUp", release=True)
        await self._safe(self.notifier.owner_alert("alert.lost_create", job_id=job.id, account=job.account or "-"))

    # --- the api_key_id our tasks carry in the list ------------------------------------------------------
    async def _known_key_id(self, account: str, rows: list[TaskSummary]) -> str | None:
        """The account's api_key_id: remembered, stored, or learned from listed rows of tasks we know."""
        known = self._key_ids.get(account) or await self.store.api_key_id(account)
        if known is not None:
            self._key_ids[account] = known
            return known
        for row in rows:
            if not row.api_key_id:
                continue
            owner = await self.store.task_owner(row.task_id)
            if owner is not None and owner[1] == account:
                await self._remember_key_id(account, row.api_key_id)
                return row.api_key_id
        return None

    async def _remember_key_id(self, account: str, api_key_id: str) -> None:
        self._key_ids[account] = api_key_id
        await self.store.save_api_key_id(account, api_key_id)
        log.info("account %s: its tasks carry api_key_id %s in the task list", account, api_key_id)

    def _learn_key_id_soon(self, account: str, provider_model: str, task_id: str, sent: datetime) -> None:
        """Look up a task we just created in the list, once per account, so the account's api_key_id is known
        before any create answer is lost (reconciliation then needs no polling to tell strangers apart)."""
        if account in self._learning or self._tasks.closing:
            return
        self._learning.add(account)
        self._tasks.spawn(self._learn_key_id(account, provider_model, task_id, sent), f"learn-key-{account}")

    async def _learn_key_id(self, account: str, provider_model: str, task_id: str, sent: datetime) -> None:
        try:
            await asyncio.sleep(self.config.reconcile_grace_s)  # the list may lag behind the create
            cfg = self.config
            skew, timeout = timedelta(seconds=cfg.clock_skew_s), timedelta(seconds=cfg.request_timeout_s)
            client = self.clients[account]
            rows, _ = await self._list_created(client, provider_model, sent - skew, sent + timeout + skew)
            mine = next((row for row in rows if row.task_id == task_id), None)
            if mine is not None and mine.api_key_id and account not in self._key_ids:
                await self._remember_key_id(account, mine.api_key_id)
        except DashScopeError as exc:
            log.info("account %s: api_key_id not learned yet (%s)", account, exc.code)
        finally:
            self._learning.discard(account)

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
                await self._fail(job, "job.failed.expired", code="TaskExpired", release=True)
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
            except MalformedAnswerError as exc:
                # An answer that can't be read says nothing about the task: ask again later, never conclude.
                self._count_error(exc)
                self.counters["malformed_answers"] += 1
                if job.id not in self._malformed_logged:
                    self._malformed_logged.add(job.id)
                    log.warning("job %s: unreadable answer from the provider (%s); retrying with backoff",
                                job.id, exc, extra={"job_id": job.id})  # fmt: skip
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
                self._free_slot(job.id)
                return
            job = refreshed
            done = await self._on_status(job, result, polled_at)
            if done:
                return

    async def _on_status(self, job: Job, result: TaskResult, polled_at: float) -> bool:
        status = result.status
        if status is TaskStatus.UNKNOWN:
            # Expired or never existed; believed only when repeated or when the task can't exist any more.
            streak = self._unknown_streak[job.id] = self._unknown_streak.get(job.id, 0) + 1
            expired = job.submitted_at is not None and utcnow() - job.submitted_at > TASK_LIFETIME
            if streak < 2 and not expired:
                log.info("job %s: provider says UNKNOWN; asking again", job.id, extra={"job_id": job.id})
                return False
            await self._fail(job, "job.failed.expired", code="UNKNOWN", release=True)
            return True
        self._unknown_streak.pop(job.id, None)
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
        # FAILED
        code = result.code or "Failed"
        if isinstance(result.error(), ProviderUnavailableError) and await self.store.provider_tasks_used(job.id) < 2:
            await self._resubmit(job, code)
            return True
        await self._fail(job, describe_failure(code), code=code, release=True, detail=result.message)
        return True

    async def _resubmit(self, job: Job, code: str) -> None:
        """The provider gave up on the task for its own reasons (InternalError, ModelServingError...): send the
        job once more, on the same reservation. The failed task stays recorded as the job's."""
        job = await self.store.transition(
            job.id, JobState.QUEUED, expect=(JobState.PENDING, JobState.RUNNING),
            detail=f"task failed ({code}); sent once more", task_id=None, request_id=None, started_at=None,
        )  # fmt: skip
        self.counters["resubmitted_after_failure"] += 1
        log.warning("job %s: task failed with %s; sending it once more", job.id, code, extra={"job_id": job.id})
        self._forget_task(job.id)
        self.scheduler.queue.push(_queued(job), front=True)
        self._free_slot(job.id)

    async def _succeeded(self, job: Job, result: TaskResult, polled_at: float) -> None:
        settlement = self.budget.settlement(job, result.billed_seconds)
        self._free_slot(job.id)  # the provider's slot is free now: the next job goes while we settle
        if settlement.clamped:
            self.counters["bills_clamped"] += 1
            log.warning(
                "job %s: the provider billed %r s for a fixed-length video; charged at most the reservation",
                job.id, result.billed_seconds, extra={"job_id": job.id},
            )  # fmt: skip
            await self._safe(
                self.notifier.owner_alert("alert.bill_clamped", job_id=job.id, billed=repr(result.billed_seconds))
            )
        now = utcnow()
        expires = now + TASK_LIFETIME
        job = await self.store.transition(
            job.id, JobState.SUCCEEDED, settle=settlement.cost, actual_prompt=result.actual_prompt,
            video_url_expires_at=expires, started_at=job.started_at or now,
        )  # fmt: skip
        stats = self.scheduler.durations_for(job.model, job.resolution)
        queued_s, running_s = result.queued_seconds, result.running_seconds
        if _plausible(queued_s) and _plausible(running_s):
            assert queued_s is not None and running_s is not None
            stats.observe(queued_s, running_s)  # the provider's own times: exact
        elif job.submitted_at is not None:  # our poll times: off by up to a poll gap at each end
            started = self._started_mono.get(job.id, polled_at)
            queued_s = max(0.0, ((job.started_at or now) - job.submitted_at).total_seconds())
            stats.observe(queued_s, polled_at - started)
        self._finish(job)
        self._emit("succeeded", job)
        await self._deliver(job, result.video_url, redelivery=False)

    def _forget_task(self, job_id: int) -> None:
        self._started_mono.pop(job_id, None)
        self._last_pending_poll.pop(job_id, None)
        self._start_lo.pop(job_id, None)
        self._unknown_streak.pop(job_id, None)

    def _finish(self, job: Job) -> None:
        self._forget_task(job.id)
        self._free_slot(job.id)

    # --- delivery ------------------------------------------------------------------------------------
    async def _deliver(self, job: Job, url: str | None, *, redelivery: bool) -> None:
        """Download the video and post it; over the size cap, post the provider's link instead (once)."""
        path = self.media.video_path(job.id)
        too_large = False
        for attempt in range(self.config.max_delivery_attempts):
            try:
                if too_large or not path.exists():
                    if url is None:
                        url = await self._fresh_video_url(job)
                    if url is None:
                        await self._fail(job, "job.failed.video_lost", code="VideoUnavailable")
                        return
                if too_large:
                    # Larger than any upload: the notifier posts the link, with its expiry.
                    video = Video(path=path, size=self.config.max_video_bytes + 1, url=url,
                                  url_expires_at=job.video_url_expires_at)  # fmt: skip
                else:
                    if not path.exists():
                        assert url is not None
                        size = await self.clients[job.account or ""].download_video(
                            url, path, max_bytes=self.config.max_video_bytes
                        )
                        job = await self.store.update(job.id, video_path=str(path))
                    else:
                        size = path.stat().st_size
                    video = Video(path=path, size=size, url=url, url_expires_at=job.video_url_expires_at)
                await self.notifier.deliver(job, video, redelivery=redelivery or attempt > 0)
            except ForeignVideoUrlError as exc:
                self._count_error(exc)
                self.counters["video_urls_refused"] += 1
                log.error("job %s: the video URL is not the provider's storage (%s); not fetched",
                          job.id, exc, extra={"job_id": job.id})  # fmt: skip
                await self._fail(job, "job.failed.video_refused", code=exc.code)
                await self._safe(self.notifier.owner_alert("alert.video_url_refused", job_id=job.id))
                return
            except VideoTooLargeError as exc:
                self._count_error(exc)
                log.warning("job %s: %s; posting the link instead", job.id, exc.message, extra={"job_id": job.id})
                too_large = True
                continue  # nothing was downloaded: no need to wait
            except NotAVideoError as exc:
                self._count_error(exc)
                log.error("job %s: the provider's file is not a video (%s)", job.id, exc, extra={"job_id": job.id})
                await self._fail(job, "job.failed.not_a_video", code=exc.code)
                return
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
    async def _fail(self, job: Job, key: str, *, code: str, release: bool = False, detail: str | None = None) -> None:
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


def _could_be(row: TaskSummary, key_id: str | None, model: str, earliest: datetime, latest: datetime) -> bool:
    """Whether a listed task can be the one a create sent at [earliest, latest] made (before any echo)."""
    created = row.created_at
    if created is None or not earliest <= created <= latest:
        return False
    if row.model_name is not None and row.model_name != model:
        return False
    return key_id is None or row.api_key_id == key_id


def _echo_matches(job: Job, result: TaskResult) -> bool | None:
    """Whether what the task echoes is this job's request: True, False, or None when it echoes nothing yet
    (the prompt is echoed once the task has succeeded; an effect sends no prompt, so echoes none)."""
    if result.orig_prompt is None:
        return None
    sent_prompt = "" if job.template is not None else job.prompt
    return result.orig_prompt == sent_prompt


def _closest_to(sent: datetime) -> Callable[[TaskSummary], float]:
    def distance(row: TaskSummary) -> float:
        created = row.created_at
        return abs((created - sent).total_seconds()) if created is not None else math.inf

    return distance


def _plausible(seconds: float | None) -> bool:
    """A provider duration worth learning from (times are untrusted: a day-long or negative one is not)."""
    return seconds is not None and math.isfinite(seconds) and 0 <= seconds <= TASK_LIFETIME.total_seconds()
