"""Dispatch: take queued jobs in the scheduler's order, mark them SUBMITTING, send their creates, and sort out
what the provider answers (accepted, throttled, refused, or lost)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from datetime import timedelta

from bot.dashscope.errors import (
    AccountProblemError,
    ContentRejectedError,
    DashScopeError,
    InvalidRequestError,
    SubmissionOutcomeUnknownError,
    ThrottledError,
)
from bot.dashscope.families import family_named
from bot.dashscope.families.base import MediaType
from bot.dashscope.models import CreateTaskRequest, RequestValidationError
from bot.jobs.models import Job, JobState
from bot.jobs.scheduler import QueuedJob
from bot.jobs.store import StaleState, utcnow
from bot.jobs.worker.context import WorkerContext
from bot.jobs.worker.polling import Poller
from bot.jobs.worker.reconcile import KeyIds, Reconciler
from bot.jobs.worker.supervision import Supervisor

log = logging.getLogger(__name__)

# Building a create this long after the job was marked SUBMITTING moves its `submitted_at` to the send.
RESTAMP_AFTER = timedelta(seconds=1)


class Dispatcher:
    """Sends queued jobs to the provider as the scheduler allows, and keeps queued members told their place."""

    def __init__(
        self, ctx: WorkerContext, supervisor: Supervisor, poller: Poller, reconciler: Reconciler, key_ids: KeyIds
    ) -> None:
        self._ctx = ctx
        self._supervisor = supervisor
        self._poller = poller
        self._reconciler = reconciler
        self._key_ids = key_ids

    async def run(self) -> None:
        """Dispatch whatever the scheduler allows, then sleep until it may allow more or someone wakes us."""
        ctx = self._ctx
        scheduler = ctx.scheduler
        while not ctx.stopping:
            now = ctx.clock()
            while (picked := scheduler.next_dispatch(now)) is not None:
                queued, account = picked
                scheduler.limits.begin_submit(account, queued.model, queued.job_id, now)
                self._supervisor.run(queued.job_id, "submit", self._submit(queued, account))
            wake_at = scheduler.wake_at(now)
            timeout = None if wake_at is None else max(0.005, wake_at - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.wake_event.wait(), timeout)
            ctx.wake_event.clear()

    async def watch_queue(self) -> None:
        """Tell waiting jobs when their place in the queue moves (the notifier coalesces the edits)."""
        ctx = self._ctx
        seen_version = -1
        last_positions: dict[int, int] = {}
        while not ctx.stopping:
            await asyncio.sleep(ctx.config.queue_refresh_s)
            queue = ctx.scheduler.queue
            if queue.version == seen_version:
                continue
            seen_version = queue.version
            positions = queue.positions()
            moved = [
                job_id
                for job_id, position in positions.items()
                if position <= ctx.config.queue_watch_depth and last_positions.get(job_id) != position
            ]
            last_positions = positions
            for job_id in moved:
                job = await ctx.store.get(job_id)
                if job is not None and job.state is JobState.QUEUED:
                    await ctx.safe_update(job)

    async def _submit(self, queued: QueuedJob, account: str) -> None:
        ctx = self._ctx
        try:
            current = await ctx.store.get(queued.job_id)
            if current is None or current.state is not JobState.QUEUED:
                ctx.free_slot(queued.job_id)  # cancelled while it waited for its turn
                return
            if current.cancel_requested:
                # A Cancel pressed while the job was being sent (or sent again after its task failed) is
                # honoured before any resend: nothing more reaches the provider, nothing is charged.
                await ctx.cancel_queued(current)
                return
            # Marked SUBMITTING in the order jobs were picked; the create leaves once its body is built (well
            # inside the clock skew a lost answer's task is looked for with).
            job = await ctx.store.transition(
                queued.job_id, JobState.SUBMITTING, expect=JobState.QUEUED, account=account,
                attempts=current.attempts + 1,
            )  # fmt: skip
        except StaleState:
            ctx.free_slot(queued.job_id)
            return
        try:
            request = await self._request_for(job, account)
        except (RequestValidationError, OSError, KeyError) as exc:
            log.error("job %s cannot be sent: %s", job.id, exc, extra={"job_id": job.id})
            await ctx.fail(job, "job.failed.invalid", code="LocalValidation", release=True)
            return
        except DashScopeError as exc:
            # An upload failed for good (the cache retried the temporary errors): nothing was created, so the
            # create's own classification applies (throttled/unavailable -> queue again, invalid -> fail).
            ctx.scheduler.limits.end_submit(account, job.id)
            ctx.count_error(exc)
            log.warning("job %s: media upload failed: %s", job.id, exc, extra={"job_id": job.id})
            await self._create_refused(job, account, exc)
            return
        await self._send(await self._restamped(job), account, request)

    async def _restamped(self, job: Job) -> Job:
        """The job with `submitted_at` moved to now when building the create took a while (the media family's
        uploads): a lost answer's task is looked for around the moment the create left, not when the job was
        marked SUBMITTING, or a slow upload would push that task out of the window and it would be paid twice."""
        assert job.submitted_at is not None
        if utcnow() - job.submitted_at < RESTAMP_AFTER:
            return job
        return await self._ctx.store.update(job.id, submitted_at=utcnow())

    async def _send(self, job: Job, account: str, request: CreateTaskRequest) -> None:
        ctx = self._ctx
        limits = ctx.scheduler.limits
        ctx.counters["submissions"] += 1
        limits.mark_sent(account, job.request.model, job.id, ctx.clock())  # the rate window counts from here
        try:
            created = await ctx.clients[account].create_task(request)
        except DashScopeError as exc:
            limits.end_submit(account, job.id)
            ctx.count_error(exc)
            await self._create_refused(job, account, exc)
            return
        limits.end_submit(account, job.id)
        limits.succeeded(account, job.request.model)
        job = await ctx.store.transition(
            job.id, JobState.PENDING, expect=JobState.SUBMITTING, task_id=created.task_id,
            request_id=created.request_id,
        )  # fmt: skip
        if not self._key_ids.knows(account) and job.task_id is not None and job.submitted_at is not None:
            names = ctx.catalog.recognised_names(job.request.model, ctx.region)
            self._key_ids.learn_soon(account, names, job.task_id, job.submitted_at)
        # The create's own answer (PENDING) just came: the first poll can wait for the planner.
        await self._poller.track(job, account, fresh=True)

    async def _create_refused(self, job: Job, account: str, exc: DashScopeError) -> None:
        ctx = self._ctx
        if isinstance(exc, ThrottledError):
            ctx.counters["throttled"] += 1
            delay = ctx.scheduler.limits.throttled(account, job.request.model, ctx.clock())
            log.warning(
                "throttled (%s); %s/%s cools down %.0fs, job %s back to the front",
                exc.code, account, job.request.model, delay, job.id, extra={"job_id": job.id},
            )  # fmt: skip
            await ctx.requeue(job, "throttled", attempted=False)
        elif isinstance(exc, AccountProblemError):
            await ctx.account_problem(account, exc)
            await ctx.requeue(job, f"account problem {exc.code}", attempted=False)
        elif isinstance(exc, SubmissionOutcomeUnknownError):
            log.warning("job %s: create answer lost (%s); reconciling", job.id, exc.code, extra={"job_id": job.id})
            await self._reconciler.reconcile(job, lost_at=utcnow())
        elif isinstance(exc, ContentRejectedError):
            await ctx.fail(job, "job.failed.content", code=exc.code, release=True)
        elif isinstance(exc, InvalidRequestError):
            # Most effect names in the catalog are unconfirmed (see `kf2v-bot check`): a template the provider
            # doesn't know is named to the user, so they pick another instead of retrying the same one.
            key = "job.failed.template_refused" if job.request.template else "job.failed.invalid"
            await ctx.fail(job, key, code=exc.code, release=True, detail=exc.message)
        elif job.attempts >= ctx.config.max_submit_attempts:
            await ctx.fail(job, "job.failed.provider", code=exc.code, release=True)
        else:  # ProviderUnavailableError and unknown codes: nothing was created
            ctx.scheduler.limits.throttled(account, job.request.model, ctx.clock())
            await ctx.requeue(job, f"provider error {exc.code}")

    async def _request_for(self, job: Job, account: str) -> CreateTaskRequest:
        """The create body. The model's API family decides what of the job's media is sent and how
        (`ApiFamily.media_to_send`): inline as data URIs (the kf2v family's frames), or through the upload cache
        (per account and provider model; a job resumed after a restart re-uploads only what expired) as oss://
        URLs (the media family's frames, audio and clips)."""
        ctx = self._ctx
        spec = ctx.catalog.model(job.request.model)
        request = job.request
        optional: tuple[tuple[MediaType, str | None], ...] = (
            ("last_frame", job.last_frame),
            ("driving_audio", request.audio),
            ("first_clip", request.first_clip),
        )
        refs: dict[MediaType, str] = {"first_frame": job.first_frame, **{k: ref for k, ref in optional if ref}}
        transport = spec.media_transport.get(ctx.region, "") if ctx.uploads is not None else "inline"
        outgoing = family_named(spec.family).media_to_send(refs, transport, name_prefix=f"job-{job.id}")
        urls: dict[MediaType, str] = {}
        for item in outgoing:
            if item.transport != "temporary_upload" or ctx.uploads is None:
                urls[item.kind] = await asyncio.to_thread(self._data_uri, item.ref)
                continue
            data = await asyncio.to_thread(ctx.media.read_frame, item.ref)
            uploaded = await ctx.uploads.url_for(
                ctx.clients[account],
                account,
                ctx.catalog.provider_name(job.request.model, ctx.region),
                data,
                filename=item.filename,
                content_type=ctx.media.mime_of(item.ref),
            )
            urls[item.kind] = uploaded.url
        return await asyncio.to_thread(self._build_request, job, urls)

    def _data_uri(self, ref: str) -> str:
        media = self._ctx.media
        return f"data:{media.mime_of(ref)};base64,{base64.b64encode(media.read_frame(ref)).decode()}"

    def _build_request(self, job: Job, urls: dict[MediaType, str]) -> CreateTaskRequest:
        request = job.request
        return CreateTaskRequest.build(
            self._ctx.catalog,
            self._ctx.region,
            model_key=request.model,
            resolution=request.resolution,
            prompt=request.prompt or None,
            negative_prompt=request.negative_prompt,
            first_frame_uri=urls.get("first_frame"),
            last_frame_uri=urls.get("last_frame"),
            prompt_extend=request.prompt_extend,
            seed=request.seed,
            template=request.template,
            duration=request.duration,
            driving_audio_url=urls.get("driving_audio"),
            first_clip_url=urls.get("first_clip"),
            sound=request.sound,
        )
