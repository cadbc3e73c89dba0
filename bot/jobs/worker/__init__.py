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

The parts, each a class sharing one `WorkerContext`: `dispatch` (queue -> create), `polling` (task ->
finished), `delivery` (video -> Discord), `reconcile` (lost creates), `supervision` (crashed work).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta

from bot.background import BackgroundTasks
from bot.catalog import Catalog
from bot.jobs.db import is_database_fault
from bot.jobs.media import MediaStore
from bot.jobs.models import SLOT_STATES, Job, JobState
from bot.jobs.ports import Clock, Notifier, Progress, ProviderClient
from bot.jobs.quota import BudgetService
from bot.jobs.scheduler import QueuedJob, Scheduler
from bot.jobs.store import JobStore, utcnow
from bot.jobs.uploads import DatabaseUploadStore, UploadCache
from bot.jobs.worker.context import WorkerConfig, WorkerContext, describe_failure
from bot.jobs.worker.delivery import Delivery
from bot.jobs.worker.dispatch import Dispatcher
from bot.jobs.worker.polling import Poller
from bot.jobs.worker.reconcile import KeyIds, Reconciler
from bot.jobs.worker.supervision import Supervisor

__all__ = ["Worker", "WorkerConfig", "describe_failure"]

log = logging.getLogger(__name__)


class Worker:
    """The engine's facade: start/stop, recovery after a restart, and the entry points the service calls."""

    def __init__(
        self,
        *,
        store: JobStore,
        media: MediaStore,
        clients: Mapping[str, ProviderClient],
        catalog: Catalog,
        region: str,
        scheduler: Scheduler,
        budget: BudgetService,
        notifier: Notifier,
        config: WorkerConfig,
        clock: Clock = time.monotonic,
        on_event: Callable[[str, Job], None] | None = None,  # metrics: ("submitted" | "running" | ..., job)
        uploads: UploadCache | None = None,  # default: kept in the store's database, so restarts reuse uploads
    ) -> None:
        uploads = uploads or UploadCache(DatabaseUploadStore(store.database))
        self._ctx = ctx = WorkerContext(
            store=store, media=media, clients=dict(clients), catalog=catalog, region=region, scheduler=scheduler,
            budget=budget, notifier=notifier, config=config, clock=clock, on_event=on_event, uploads=uploads,
        )  # fmt: skip
        self._supervisor = Supervisor(ctx, resume=self._resume)
        self._delivery = Delivery(ctx)
        self._poller = Poller(ctx, self._supervisor, self._delivery)
        key_ids = KeyIds(ctx)
        self._reconciler = Reconciler(ctx, key_ids, self._poller)
        self._dispatcher = Dispatcher(ctx, self._supervisor, self._poller, self._reconciler, key_ids)
        self._dispatch_task: asyncio.Task[None] | None = None
        self._recovered = False

    # --- what others read ----------------------------------------------------------------------------
    @property
    def config(self) -> WorkerConfig:
        """The worker's settings (tests change them between steps)."""
        return self._ctx.config

    @config.setter
    def config(self, config: WorkerConfig) -> None:
        """Replace the configuration (tests and benchmarks retime the engine); the poll gates follow it."""
        self._ctx.config = config
        self._ctx.rebuild_poll_gates()

    @property
    def store(self) -> JobStore:
        """The job store the worker records every step in."""
        return self._ctx.store

    @property
    def media(self) -> MediaStore:
        """Where keyframes are read and videos downloaded."""
        return self._ctx.media

    @property
    def clients(self) -> dict[str, ProviderClient]:
        """Provider clients by account fingerprint."""
        return self._ctx.clients

    @property
    def catalog(self) -> Catalog:
        """The catalog the bot runs with."""
        return self._ctx.catalog

    @property
    def scheduler(self) -> Scheduler:
        """Decides which queued job goes to which account, and when."""
        return self._ctx.scheduler

    @property
    def budget(self) -> BudgetService:
        """Settles and releases the jobs' reserved money."""
        return self._ctx.budget

    @property
    def notifier(self) -> Notifier:
        """Where progress, videos and failures are reported."""
        return self._ctx.notifier

    @property
    def clock(self) -> Clock:
        """Monotonic seconds used for every wait and deadline."""
        return self._ctx.clock

    @property
    def counters(self) -> dict[str, int]:
        """Event counts for metrics (submissions, polls, provider errors...)."""
        return self._ctx.counters

    @property
    def errors_by_code(self) -> dict[str, int]:
        """Provider errors seen, by code."""
        return self._ctx.errors_by_code

    @property
    def lease_lost(self) -> asyncio.Event:
        """Set when a submission write was refused because another process took the dispatcher lease."""
        return self._ctx.lease_lost

    @property
    def alive(self) -> bool:
        """Whether the dispatcher was started and has not stopped (it may be restarting after a fault)."""
        return self._dispatch_task is not None and not self._dispatch_task.done()

    @property
    def dispatching(self) -> bool:
        """Whether the dispatcher is running right now: started, recovered, and not waiting to restart."""
        health = self._ctx.tasks.supervised.get("dispatcher")
        return self.alive and self._recovered and health is not None and health.state == "running"

    @property
    def tasks(self) -> BackgroundTasks:
        """The worker's background tasks (the supervised long-lived ones are in `tasks.supervised`)."""
        return self._ctx.tasks

    @property
    def supervisor(self) -> Supervisor:
        """Runs each job's work and resumes it after a fault."""
        return self._supervisor

    # --- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover from the database, then start dispatching (both supervised: a fault restarts them).

        A database that does not answer yet does not stop the start: recovery is retried by the dispatcher
        until it answers. Calling `start` again does nothing."""
        if self._dispatch_task is not None:
            return
        try:
            await self.recover()
            self._recovered = True
        except Exception as exc:
            if not is_database_fault(exc):
                raise
            log.warning("recovery postponed, the database does not answer (%s: %s)", type(exc).__name__, exc)
        self._dispatch_task = self._ctx.tasks.supervise("dispatcher", self._recover_then_dispatch)
        self._ctx.tasks.supervise("queue-watch", self._dispatcher.watch_queue)

    async def _recover_then_dispatch(self) -> None:
        failures = 0
        while not self._recovered and not self._ctx.stopping:
            try:
                await self.recover()
                self._recovered = True
            except Exception as exc:
                if not is_database_fault(exc):
                    raise
                failures += 1
                await asyncio.sleep(min(self.config.db_retry_max_s, self.config.db_retry_base_s * 2**failures))
        await self._dispatcher.run()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking jobs; whatever is in flight stays resumable from its row."""
        self._ctx.stopping = True
        self._ctx.wake()
        if self._dispatch_task is not None:
            self._dispatch_task.cancel()
            await asyncio.gather(self._dispatch_task, return_exceptions=True)
        await self._ctx.tasks.close(grace_s)

    def wake(self) -> None:
        """Have the dispatcher look at the queue again (a pause lifted, a slot freed)."""
        self._ctx.wake()

    async def recover(self) -> None:
        """Rebuild the queue and the account bookkeeping from the database after a (re)start.

        Safe to run again after it failed half-way (a database fault): jobs already resumed are skipped."""
        ctx = self._ctx
        scheduler = ctx.scheduler
        now_wall, now_mono = utcnow(), ctx.clock()
        # Every create that may have reached the provider counts in its lane's rate window (its slot is held
        # below): one still SUBMITTING from now, since it may have left up to the moment the process died.
        for account, model, at in await ctx.store.recent_submissions(now_wall - timedelta(seconds=5)):
            sent = now_mono if at is None else now_mono - max(0.0, (now_wall - at).total_seconds())
            scheduler.limits.remember_submit(account, model, sent)
        jobs = await ctx.store.jobs_in_states([*SLOT_STATES, JobState.QUEUED, JobState.SUCCEEDED])
        # What the poll planner learnt before the restart (kept per tier by the poller); tiers of unfinished jobs
        # that have none kept (finished before the run_times table existed) learn from their jobs' rows.
        learnt = await ctx.store.run_times()
        for (model, resolution, duration), samples in learnt.items():
            stats = scheduler.durations_for(model, resolution, duration)
            for queued_s, running_s in samples:
                stats.observe(queued_s, running_s)
        seen_tiers = {(j.request.model, j.request.resolution, j.request.duration) for j in jobs}
        for model, resolution, duration in seen_tiers - set(learnt):
            stats = scheduler.durations_for(model, resolution, duration)
            for queued_s, running_s in reversed(await ctx.store.recent_durations(model, resolution)):
                stats.observe(queued_s, running_s)
        limits, queue = scheduler.limits, scheduler.queue
        for job in jobs:
            if self._supervisor.active(job.id) or job.id in queue or limits.holds(job.id):
                continue  # resumed by an earlier attempt
            await self._resume(job)
        log.info("recovered %d unfinished jobs (%d queued)", len(jobs), len(scheduler.queue))
        self.wake()

    async def _resume(self, job: Job) -> None:
        """Pick up a job's work from its row: after a start, or after its work crashed."""
        ctx = self._ctx
        limits = ctx.scheduler.limits
        if not limits.serves(job.request.model):
            await self._model_gone(job)
            return
        if job.state is JobState.QUEUED:
            limits.forget(job.id)
            ctx.scheduler.queue.push(QueuedJob.of(job))
            self.wake()
            return
        if job.state is JobState.SUCCEEDED:
            self._supervisor.run(job.id, "deliver", self._delivery.deliver(job, None, redelivery=True))
            return
        if job.account not in ctx.clients:
            # Its account's place was removed from the configuration: nobody can poll its task any more, which
            # the provider may still run and bill. The owners hear of it (docs/deployment.md: rotating a key).
            log.error(
                "job %s: its account %s is no longer configured; failed, released (its task may still be billed)",
                job.id, job.account, extra={"job_id": job.id},
            )  # fmt: skip
            await ctx.fail(job, "job.failed.account_gone", code="AccountRemoved", release=True)
            await ctx.safe(ctx.notifier.owner_alert("alert.account_gone", job_id=job.id, account=job.account or "-"))
            return
        assert job.account is not None
        limits.occupy(job.account, job.request.model, job.id)
        # No create of this job is in the air any more (a crash may have left its marker, which would keep
        # other lost answers on the lane from being decided).
        limits.end_submit(job.account, job.id)
        if job.state is JobState.SUBMITTING:
            self._supervisor.run(job.id, "reconcile", self._reconciler.reconcile(job))
            return
        if job.state is JobState.RUNNING and job.started_at is not None and job.id not in ctx.started_mono:
            ctx.started_mono[job.id] = ctx.clock() - (utcnow() - job.started_at).total_seconds()
        self._poller.watch(job)

    async def _model_gone(self, job: Job) -> None:
        """The job's model (or the region's offer of it) left the catalog since it was admitted: nothing can be
        sent or priced for it any more. Fail it with its money released (a queued task is cancelled first)."""
        log.warning("job %s: model %s is no longer offered in region %s; failing it released",
                    job.id, job.request.model, self._ctx.region, extra={"job_id": job.id})  # fmt: skip
        if job.state is JobState.PENDING:
            await self._ctx.cancel_at_provider(job)
        await self._ctx.fail(
            job, "job.failed.model_gone", code="ModelUnavailable", release=True,
            detail=f"{job.request.model} not offered in {self._ctx.region}",
        )  # fmt: skip

    # --- entry points for the service layer ----------------------------------------------------------
    def enqueue(self, job: Job) -> None:
        """Queue a freshly admitted job. One whose model this process no longer offers is failed instead by the
        dispatcher (a standby leaves it alone: the dispatcher, perhaps of another version, decides)."""
        if not self._ctx.scheduler.limits.serves(job.request.model):
            if self.alive:
                self._supervisor.run(job.id, "model-gone", self._model_gone(job))
            return
        self._ctx.scheduler.queue.push(QueuedJob.of(job))
        self.wake()

    def dequeue(self, job_id: int) -> bool:
        """Take a queued job out of the queue (cancelled); False when it was not queued."""
        removed = self._ctx.scheduler.queue.remove(job_id) is not None
        if removed:
            self.wake()
        return removed

    def progress(self, job: Job) -> Progress:
        """Where the job stands, for its status message."""
        return self._ctx.progress(job)

    async def cancel_at_provider(self, job: Job) -> bool:
        """Ask the provider to cancel a PENDING task. True when it was cancelled there."""
        return await self._ctx.cancel_at_provider(job)

    async def redeliver(self, job_id: int) -> tuple[str, str]:
        """Post a kept video now (`/kf2v-admin redeliver`): see `Delivery.redeliver` for the outcomes."""
        job = await self._ctx.store.get(job_id)
        if job is None:
            return "unknown", ""
        outcome, detail = await self._delivery.redeliver(job)
        if outcome == "started":
            if not self.alive:
                return "elsewhere", ""  # a standby: the process dispatching (and delivering) holds the lease
            self._supervisor.run(job.id, "deliver", self._delivery.deliver(job, None, redelivery=True))
            outcome = "retrying"
        return outcome, detail

    def resume_account(self, account: str) -> None:
        """Lift an account's pause (after the owners fixed its key or paid)."""
        self._ctx.scheduler.limits.resume(account)
        self.wake()
