"""Delivery: download the finished video and have the notifier post it, with retries."""

from __future__ import annotations

import asyncio
import logging
import random

from bot.dashscope.errors import DashScopeError, ForeignVideoUrlError, NotAVideoError, VideoTooLargeError
from bot.dashscope.models import TaskStatus
from bot.jobs.models import Job, JobState
from bot.jobs.ports import DeliveryError, Video
from bot.jobs.worker.context import WorkerContext

log = logging.getLogger(__name__)


class Delivery:
    """Posts finished videos; over the size cap, the provider's link instead (once)."""

    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx

    async def deliver(self, job: Job, url: str | None, *, redelivery: bool) -> None:
        """Download the video and post it; over the size cap, post the provider's link instead (once)."""
        ctx = self._ctx
        cfg = ctx.config
        path = ctx.media.video_path(job.id)
        too_large = False
        for attempt in range(cfg.max_delivery_attempts):
            try:
                if too_large or not path.exists():
                    if url is None:
                        url = await self._fresh_video_url(job)
                    if url is None:
                        await ctx.fail(job, "job.failed.video_lost", code="VideoUnavailable")
                        return
                if too_large:
                    # Larger than any upload: the notifier posts the link, with its expiry.
                    video = Video(path=path, size=cfg.max_video_bytes + 1, url=url,
                                  url_expires_at=job.video_url_expires_at)  # fmt: skip
                else:
                    if not path.exists():
                        assert url is not None
                        size = await ctx.clients[job.account or ""].download_video(
                            url, path, max_bytes=cfg.max_video_bytes
                        )
                        job = await ctx.store.update(job.id, video_path=str(path))
                    else:
                        size = path.stat().st_size
                    video = Video(path=path, size=size, url=url, url_expires_at=job.video_url_expires_at)
                await ctx.notifier.deliver(job, video, redelivery=redelivery or attempt > 0)
            except ForeignVideoUrlError as exc:
                ctx.count_error(exc)
                ctx.counters["video_urls_refused"] += 1
                log.error("job %s: the video URL is not the provider's storage (%s); not fetched",
                          job.id, exc, extra={"job_id": job.id})  # fmt: skip
                await ctx.fail(job, "job.failed.video_refused", code=exc.code)
                await ctx.safe(ctx.notifier.owner_alert("alert.video_url_refused", job_id=job.id))
                return
            except VideoTooLargeError as exc:
                ctx.count_error(exc)
                log.warning("job %s: %s; posting the link instead", job.id, exc.message, extra={"job_id": job.id})
                too_large = True
                continue  # nothing was downloaded: no need to wait
            except NotAVideoError as exc:
                ctx.count_error(exc)
                log.error("job %s: the provider's file is not a video (%s)", job.id, exc, extra={"job_id": job.id})
                await ctx.fail(job, "job.failed.not_a_video", code=exc.code)
                return
            except DeliveryError as exc:
                if exc.permanent:
                    log.error("job %s cannot be delivered: %s", job.id, exc.reason, extra={"job_id": job.id})
                    await ctx.fail(job, "job.failed.undeliverable", code="Undeliverable")
                    return
                log.warning("delivery of job %s failed (%s); retrying", job.id, exc.reason, extra={"job_id": job.id})
            except DashScopeError as exc:
                ctx.count_error(exc)
                log.warning("download of job %s failed (%s); retrying", job.id, exc.code, extra={"job_id": job.id})
                url = None  # ask for a fresh link next time
            except Exception:
                log.exception("delivery of job %s crashed; retrying", job.id, extra={"job_id": job.id})
            else:
                job = await ctx.store.transition(job.id, JobState.DELIVERED, expect=JobState.SUCCEEDED)
                log.info("job %s delivered", job.id, extra={"job_id": job.id})
                ctx.emit("delivered", job)
                await ctx.safe_update(job)
                return
            job = await ctx.store.update(job.id, delivery_attempts=job.delivery_attempts + 1)
            await asyncio.sleep(cfg.delivery_backoff_s * 2**attempt * (0.5 + random.random()))  # noqa: S311
        await ctx.fail(job, "job.failed.undeliverable", code="DeliveryRetriesExhausted")

    async def _fresh_video_url(self, job: Job) -> str | None:
        ctx = self._ctx
        if job.task_id is None or job.account not in ctx.clients:
            return None
        result = await ctx.clients[job.account].get_task(job.task_id)
        if result.status is TaskStatus.SUCCEEDED and result.video_url:
            return result.video_url
        return None
