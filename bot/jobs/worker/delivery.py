"""Delivery: download the finished video and have the notifier post it - the file, or the provider's link when the
guild can't take the file - until it is posted or truly gone.

The promise: a guild is charged only for a video its members can see. A video that exists (the mp4 on disk, or
the provider's link, valid 24 h after the task finished and given anew by polling the task) is delivered whatever
happens meanwhile: Discord outages, missing permissions and deleted threads are waited out with a back-off capped
at `delivery_backoff_max_s`, so once Discord answers again every waiting video goes within a minute; a restart
resumes from the row (the notifier first checks whether the video was posted already). A job is given up only when
its video is gone (no file and no working link), or has waited longer than videos are kept; then its money is
given back. So is a video the provider billed but sent as something nobody may fetch or see (a URL off the
allow-list, a file that is not an MP4): the guild is not charged, and the owners are told the account was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import timedelta

from bot.dashscope.errors import (
    DashScopeError,
    ForeignVideoUrlError,
    NotAVideoError,
    VideoTooLargeError,
    VideoUnavailableError,
)
from bot.dashscope.models import TaskStatus
from bot.jobs.db import LeaseLost, is_database_fault
from bot.jobs.models import Job, JobState
from bot.jobs.ports import DeliveryError, Video
from bot.jobs.store import StaleState, utcnow
from bot.jobs.worker.context import TASK_LIFETIME, WorkerContext

log = logging.getLogger(__name__)

# A link this close to its expiry is not worth posting: the member would find it dead.
LINK_MARGIN = timedelta(minutes=5)


class VideoGone(Exception):
    """Neither the file nor a working link of the video exists (or may be fetched): nothing can be posted, and
    the guild gets its money back. `alert`: the owners' alert sent once the job is failed, for what the provider
    billed the account but sent as no video anyone may see (a foreign URL, a file that is not an MP4)."""

    def __init__(self, key: str, code: str, *, alert: str | None = None) -> None:
        super().__init__(code)
        self.key = key
        self.code = code
        self.alert = alert


class Delivery:
    """Posts finished videos (file or link), retrying until posted or the video is gone."""

    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        self._waiting: dict[int, asyncio.Event] = {}  # job id -> set to try again at once (redeliver)

    def waiting(self) -> list[int]:
        """Jobs whose video waits for Discord (between two attempts, or in one)."""
        return sorted(self._waiting)

    def retry_now(self, job_id: int) -> bool:
        """Have a waiting delivery try again at once; False when none waits in this process."""
        event = self._waiting.get(job_id)
        if event is None:
            return False
        event.set()
        return True

    async def deliver(self, job: Job, url: str | None, *, redelivery: bool) -> None:
        """Download the video and post it; the link instead when the file can't be uploaded. Returns when the
        job is DELIVERED or failed (its money given back)."""
        ctx = self._ctx
        if job.id in self._waiting:
            return  # one delivery per job at a time; the waiting one picks up (a redeliver woke it)
        wake = self._waiting[job.id] = asyncio.Event()
        try:
            await self._deliver(job, url, redelivery=redelivery, wake=wake)
        except VideoGone as gone:
            log.error("job %s: no video to post (%s); not charged", job.id, gone.code, extra={"job_id": job.id})
            # Alerted after the FAILED row is written (once): a database fault before it resumes the delivery.
            if await ctx.fail(job, gone.key, code=gone.code, release=True) and gone.alert is not None:
                await ctx.safe(ctx.notifier.owner_alert(gone.alert, job_id=job.id, task_id=job.task_id or "?"))
        finally:
            if self._waiting.get(job.id) is wake:
                del self._waiting[job.id]

    async def _deliver(self, job: Job, url: str | None, *, redelivery: bool, wake: asyncio.Event) -> None:
        ctx = self._ctx
        cfg = ctx.config
        path = ctx.media.video_path(job.id)
        link_only = False  # the file can't be uploaded (over every limit) or fetched: share the provider's link
        download_failures = dead_links = crashes = 0
        attempt = 0
        while True:
            try:
                on_disk = await asyncio.to_thread(path.exists)
                if not on_disk and not link_only:
                    if download_failures >= cfg.max_delivery_attempts:
                        log.warning("job %s: downloads failing; posting the link", job.id, extra={"job_id": job.id})
                        link_only = True
                        continue
                    url = url or await self._fresh_url(job)
                    if url is None:
                        raise VideoGone("job.failed.video_lost", "VideoUnavailable")
                    await ctx.clients[job.account or ""].download_video(url, path, max_bytes=cfg.max_video_bytes)
                    job = await ctx.store.update(job.id, video_path=str(path))
                    on_disk = True
                # Link only: over the guild's limit (or never downloaded): the notifier must not try the file.
                link = link_only or not on_disk
                url = await self._link(job, url, required=link)
                size = cfg.max_video_bytes + 1 if link else (await asyncio.to_thread(path.stat)).st_size
                video = Video(path=path, size=size, url=url, url_expires_at=job.video_url_expires_at)
                await self._post(job, video, redelivery=redelivery or attempt > 0)
                return
            except (LeaseLost, VideoGone):
                raise
            except ForeignVideoUrlError as exc:
                ctx.count_error(exc)
                ctx.counters["video_urls_refused"] += 1
                log.error("job %s (task %s): the video URL is not the provider's storage (%s); not fetched nor "
                          "posted", job.id, job.task_id, exc, extra={"job_id": job.id})  # fmt: skip
                raise VideoGone("job.failed.video_refused", exc.code, alert="alert.video_url_refused") from exc
            except VideoTooLargeError as exc:
                ctx.count_error(exc)
                log.warning("job %s: %s; posting the link instead", job.id, exc.message, extra={"job_id": job.id})
                link_only = True
                continue  # nothing was downloaded: no need to wait
            except NotAVideoError as exc:
                ctx.count_error(exc)
                log.error("job %s (task %s): the provider's file is not a video (%s)", job.id, job.task_id, exc,
                          extra={"job_id": job.id})  # fmt: skip
                raise VideoGone("job.failed.not_a_video", exc.code, alert="alert.not_a_video") from exc
            except VideoUnavailableError as exc:
                ctx.count_error(exc)
                log.warning("job %s: the video link is dead (%s); asking for a fresh one", job.id, exc.code,
                            extra={"job_id": job.id})  # fmt: skip
                dead_links += 1
                if url is None or dead_links >= 2:  # a fresh link dead too: the provider no longer has it
                    raise VideoGone("job.failed.video_lost", exc.code) from exc
                url = None
                continue
            except DeliveryError as exc:
                if exc.needs_link and not link_only:
                    log.info("job %s: over the server's limit; posting the link", job.id, extra={"job_id": job.id})
                    link_only = True
                    continue
                if exc.permanent:
                    log.error("job %s cannot be delivered: %s", job.id, exc.reason, extra={"job_id": job.id})
                    raise VideoGone("job.failed.undeliverable", "Undeliverable") from exc
                log.warning("delivery of job %s waits (%s); the video is kept", job.id, exc.reason,
                            extra={"job_id": job.id})  # fmt: skip
            except DashScopeError as exc:
                ctx.count_error(exc)
                download_failures += 1
                log.warning("download of job %s failed (%s); retrying", job.id, exc.code, extra={"job_id": job.id})
                url = None  # ask for a fresh link next time
            except Exception as exc:
                if is_database_fault(exc):
                    raise  # not the delivery's fault: the supervisor resumes it from the row once the database answers
                crashes += 1
                if crashes >= cfg.max_delivery_attempts:
                    raise  # a bug, not Discord: the supervisor restarts the work from the row, then gives up
                log.exception("delivery of job %s crashed; retrying", job.id, extra={"job_id": job.id})
            if self._kept_too_long(job):
                raise VideoGone("job.failed.undeliverable", "DeliveryGaveUp")
            attempt += 1
            job = await ctx.store.update(job.id, delivery_attempts=job.delivery_attempts + 1)
            await self._pause(attempt, wake)

    async def _pause(self, attempt: int, wake: asyncio.Event) -> None:
        """Back off (doubling, capped: a recovered Discord sees every waiting video within the cap), or less
        when someone asks for a redelivery."""
        cfg = self._ctx.config
        ceiling = min(cfg.delivery_backoff_max_s, cfg.delivery_backoff_s * 2 ** min(attempt - 1, 30))
        delay = ceiling * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), delay)
        wake.clear()

    def _kept_too_long(self, job: Job) -> bool:
        """Waited longer than videos are kept (KF2V_VIDEO_RETENTION_DAYS after the task finished)."""
        if job.video_url_expires_at is None:
            return False
        finished = job.video_url_expires_at - TASK_LIFETIME
        return (utcnow() - finished).total_seconds() > self._ctx.config.video_keep_s

    async def _post(self, job: Job, video: Video, *, redelivery: bool) -> None:
        """Post, then record DELIVERED, as one step a stop does not cut: a stop (SIGTERM) lets a post under way
        finish and be recorded, for up to `post_grace_s`, instead of leaving a posted video unrecorded."""
        step = asyncio.ensure_future(self._post_and_record(job, video, redelivery=redelivery))
        try:
            await asyncio.shield(step)
        except asyncio.CancelledError:
            if not step.done():
                log.info("job %s: stopping; finishing its post first", job.id, extra={"job_id": job.id})
                step.add_done_callback(lambda done: done.cancelled() or done.exception())
                await asyncio.wait({step}, timeout=self._ctx.config.post_grace_s)
            raise

    async def _post_and_record(self, job: Job, video: Video, *, redelivery: bool) -> None:
        ctx = self._ctx
        await ctx.store.check_lease(job)  # a frozen former dispatcher must not post what the new one delivers
        await ctx.notifier.deliver(job, video, redelivery=redelivery)
        try:
            job = await ctx.store.transition(job.id, JobState.DELIVERED, expect=JobState.SUCCEEDED)
        except StaleState:
            return  # recorded meanwhile (a redelivery on demand)
        log.info("job %s delivered", job.id, extra={"job_id": job.id})
        ctx.emit("delivered", job)
        await ctx.safe_update(job)

    async def _link(self, job: Job, url: str | None, *, required: bool) -> str | None:
        """The provider's link to the video if it can still be posted (on the allow-list, not about to expire);
        a fresh one is asked for when `required` and none is known. `VideoGone` when required and there is none."""
        expires = job.video_url_expires_at
        if expires is not None and utcnow() + LINK_MARGIN >= expires:
            url = None  # dead or about to be: the provider forgets the task with its result
            if required:
                raise VideoGone("job.failed.video_lost", "VideoUrlExpired")
            return None
        if url is None and required:
            url = await self._fresh_url(job)
            if url is None:
                raise VideoGone("job.failed.video_lost", "VideoUnavailable")
        if url is not None:
            client = self._ctx.clients.get(job.account or "")
            if client is None:
                if required:
                    raise VideoGone("job.failed.video_lost", "AccountRemoved")
                return None
            client.check_video_url(url)  # ForeignVideoUrlError: never posted
        return url

    async def _fresh_url(self, job: Job) -> str | None:
        """Poll the task again for its video's link (None: the provider no longer has it)."""
        ctx = self._ctx
        if job.task_id is None or job.account not in ctx.clients:
            return None
        result = await ctx.clients[job.account].get_task(job.task_id)
        if result.status is TaskStatus.SUCCEEDED and result.video_url:
            return result.video_url
        return None

    async def redeliver(self, job: Job) -> tuple[str, str]:
        """`/kf2v-admin redeliver`: post a kept video on demand. (outcome, detail): "retrying" (a waiting delivery
        tries now), "started" (its delivery was not running here: the caller starts one), "posted" (a delivered
        or failed job's video posted again), "gone", "not_ready", or "failed" with Discord's reason."""
        if job.state is JobState.SUCCEEDED:
            return ("retrying", "") if self.retry_now(job.id) else ("started", "")
        if job.state not in (JobState.DELIVERED, JobState.FAILED) or job.video_url_expires_at is None:
            return "not_ready", job.state.value
        path = self._ctx.media.video_path(job.id)
        link_only = not await asyncio.to_thread(path.exists)
        for _ in range(2):
            try:
                url = await self._link(job, None, required=link_only)
                size = (
                    self._ctx.config.max_video_bytes + 1 if link_only else (await asyncio.to_thread(path.stat)).st_size
                )
                video = Video(path=path, size=size, url=url, url_expires_at=job.video_url_expires_at)
                await self._ctx.notifier.deliver(job, video, redelivery=False)
                return "posted", ""
            except VideoGone:
                return "gone", ""
            except DeliveryError as exc:
                if exc.needs_link and not link_only:
                    link_only = True
                    continue
                return "failed", exc.reason
            except DashScopeError as exc:
                return "failed", exc.code
        return "gone", ""
