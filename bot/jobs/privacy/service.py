"""PrivacyService: forgetting a member now, and the sweeper that erases what had to finish first and what
outlived KF2V_RETENTION_DAYS.

Nothing here logs a user id or a prompt: after a member is forgotten, the log must not name them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.jobs.media import MediaStore
from bot.jobs.privacy.store import Erasure, PrivacyStore

log = logging.getLogger(__name__)

PENDING_POLL_S = 5.0  # how soon after a forgotten member's last job finishes it is erased
RETENTION_SWEEP_S = 3600.0


@dataclass(frozen=True, slots=True)
class ForgetOutcome:
    """What /kf2v-forget-me (or an owner's forget) did: rows erased now, rows still in flight, files removed."""

    jobs: int
    stories: int
    pending: int
    files: int


class PrivacyService:
    """Erases a member's prompts, ids and media; anonymises finished jobs after the retention period."""

    def __init__(
        self,
        store: PrivacyStore,
        media: MediaStore,
        retention_days: float,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pending_poll_s: float = PENDING_POLL_S,
        retention_sweep_s: float = RETENTION_SWEEP_S,
    ) -> None:
        self.store = store
        self.media = media
        self.retention = timedelta(days=retention_days)
        self.clock = clock
        self.pending_poll_s = pending_poll_s
        self.retention_sweep_s = retention_sweep_s
        self._wake = asyncio.Event()
        self._pending = True  # unknown at start: the first pass finds out

    async def forget(self, user_id: int) -> ForgetOutcome:
        """Erase `user_id`'s finished jobs and stories now (prompts, ids, media, cached uploads); mark the ones
        in flight, which the sweeper erases as soon as they finish. The ledger keeps its amounts."""
        erasure = await self.store.forget_user(user_id, self.clock())
        files = await self._remove_files(erasure)
        await self.store.scrub()
        if erasure.pending:
            self._pending = True
            self._wake.set()
        log.info(
            "privacy: a member's data was erased: %d jobs, %d stories, %d files; %d in flight erased when done",
            erasure.jobs, erasure.stories, files, erasure.pending,
        )  # fmt: skip
        return ForgetOutcome(erasure.jobs, erasure.stories, erasure.pending, files)

    async def sweep(self, *, retention: bool = True) -> Erasure:
        """One pass: erase marked rows that have finished; with `retention`, anonymise rows older than it."""
        now = self.clock()
        done = await self.store.erase_finished(now)
        self._pending = done.pending > 0
        if retention:
            cutoff = now - self.retention
            while True:
                batch = await self.store.anonymise_finished_before(cutoff, now)
                done.add(batch)
                if batch.jobs + batch.stories == 0:
                    break
        files = await self._remove_files(done)
        if done.jobs or done.stories:
            await self.store.scrub()
            log.info("privacy: anonymised %d jobs and %d stories, removed %d files", done.jobs, done.stories, files)
        return done

    async def run(self) -> None:
        """The sweeper (a background task): the retention pass hourly; marked rows every few seconds while any
        are waiting, and at once after a forget."""
        last_retention = float("-inf")
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() - last_retention >= self.retention_sweep_s
            try:
                if due or self._pending:
                    await self.sweep(retention=due)
                if due:
                    last_retention = loop.time()
            except Exception:
                log.exception("privacy sweep failed")
            wait = self.pending_poll_s if self._pending else self.retention_sweep_s
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    def wake(self) -> None:
        """Run the next pass now (tests, and after a forget)."""
        self._wake.set()

    async def _remove_files(self, erasure: Erasure) -> int:
        """Delete the erased rows' videos and media; a frame an unfinished job (anyone's) needs is kept."""
        if not (erasure.job_ids or erasure.story_ids or erasure.media):
            return 0
        refs = erasure.media - await self.store.media_in_flight()
        removed = await asyncio.to_thread(self._unlink, erasure.job_ids, erasure.story_ids, refs)
        await self.store.forget_uploads(ref.rsplit("/", 1)[-1].split(".", 1)[0] for ref in refs)
        return removed

    def _unlink(self, job_ids: list[int], story_ids: list[int], refs: set[str]) -> int:
        paths = [self.media.video_path(job_id) for job_id in job_ids]
        for story_id in story_ids:
            paths += list(self.media.videos.glob(f"story-{story_id}-*.mp4"))
        for ref in refs:
            try:
                paths.append(self.media.frame_path(ref))
            except ValueError:  # a reference pointing outside the media folder is never followed
                continue
        removed = 0
        for path in paths:
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                continue
        return removed


__all__ = ["ForgetOutcome", "PrivacyService"]
