"""StoryService: admits a story whole, watches its segment jobs, joins them once and has the result posted once.

Segment jobs are ordinary jobs (the scheduler gives them fair turns under the account's limits, the worker
settles or releases each one); what differs is only who talks to the user: `SegmentRouter` sits in front of
the real notifier and turns a segment job's events into `advance(story)`, which decides the next step from
the database alone (bot.jobs.story.plan). That makes a restart safe: `resume()` simply advances every
unfinished story; the join and the post are each recorded once per generation (StoryStore), a retry is
admitted only while its failed job is still the segment's newest, and a segment job is never submitted twice
(the worker's own rule).

No PyAV here: the join function is passed in (bot.jobs.story.join.join_segments, from the story cog).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from bot.errors import BotError, InvalidInput, NotAllowed, QueueFull, QuotaExceeded
from bot.jobs.db import Transaction
from bot.jobs.models import GuildUsage, Job, JobRequest, JobState, NewJob
from bot.jobs.ports import DeliveryError, Notifier, Progress, Video
from bot.jobs.service import Actor, JobService
from bot.jobs.story.frames import MAX_FRAMES, MIN_FRAMES, FrameError, FrameTooLarge, normalise_frames
from bot.jobs.story.plan import (
    Decision,
    EmptySegmentPrompt,
    NextStep,
    PromptCountMismatch,
    SegmentJob,
    SegmentStatus,
    StoryState,
    decide,
    new_seed,
    segment_statuses,
    split_prompts,
)
from bot.jobs.story.store import NewStory, Story, StoryStore

log = logging.getLogger(__name__)

Joiner = Callable[[Sequence[Path], Path], object]  # (segments in order, destination); raises on failure
SegmentLinks = Callable[[], Awaitable[list[tuple[str, datetime | None]]]]  # (url, expires) per segment, in order


class StoryNotifier(Protocol):
    """How a story talks to people (the Discord implementation lives in the Discord layer)."""

    async def story_updated(self, story: Story, statuses: Sequence[SegmentStatus]) -> None:
        """Refresh the story's status message: each segment's state."""

    async def story_deliver(
        self, story: Story, video: Video, *, partial: bool, redelivery: bool, links: SegmentLinks
    ) -> int | None:
        """Post the joined video in the story's thread; returns the message id. Raise DeliveryError on failure.

        `redelivery`: an earlier attempt may have posted it already; check before posting again. `links`: the
        provider's links to the segments, asked for only when the joined file is too large to upload.
        """

    async def story_failed(
        self, story: Story, *, charged: int, ready: int, can_deliver_partial: bool, reason: str = "story.failed"
    ) -> None:
        """The story ended without its video: say why (`reason`, a message key) and what was charged; offer
        "deliver as far as it got" when allowed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoryDraft:
    """A /kf2v-story as the cog read it: who asked where, the options, the keyframes' bytes in order."""

    guild_id: int
    channel_id: int
    user_id: int
    locale: str
    request: JobRequest  # model, resolution, seed and the whole prompt (`|`-separated, or one for all)
    frames: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StoryQuote:
    """What a story costs: per segment and in all (milli-CNY)."""

    segments: int
    cost_each: int
    total: int


class StoryService:
    """Stories on top of JobService: admission, progress, the join and post, and the user's choices."""

    def __init__(self, jobs: JobService, stories: StoryStore, joiner: Joiner) -> None:
        self.jobs = jobs
        self.stories = stories
        self._joiner = joiner
        self.notifier: StoryNotifier | None = None
        # Per story: its lock and how many callers hold or await it (the entry goes with the last of them).
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._shown: dict[int, tuple[StoryState, tuple[SegmentStatus, ...]]] = {}
        # The joined video's post is retried like a job's delivery: doubling from `post_backoff_s`, capped.
        self.post_backoff_s = 2.0
        self.post_backoff_max_s = 30.0
        self._post_failures: dict[int, int] = {}

    # --- admission -------------------------------------------------------------------------------------
    def quote(self, request: JobRequest, frames: int) -> StoryQuote:
        """The cost of a story of `frames` keyframes with these options (refusing options no model takes)."""
        request = self.jobs.check_text(replace(request, prompt=request.prompt or "-"))
        each = self._cost(request)
        return StoryQuote(frames - 1, each, each * (frames - 1))

    def segment_requests(self, request: JobRequest, frames: int) -> list[JobRequest]:
        """One checked request per segment (its own prompt); refusals name what is wrong."""
        if not MIN_FRAMES <= frames <= MAX_FRAMES:
            raise InvalidInput("story.frame_count", count=frames, low=MIN_FRAMES, high=MAX_FRAMES)
        try:
            prompts = split_prompts(request.prompt, frames - 1)
        except PromptCountMismatch as exc:
            raise InvalidInput("story.prompt_count", prompts=exc.prompts, segments=exc.segments) from None
        except EmptySegmentPrompt as exc:
            raise InvalidInput("story.prompt_empty", segment=exc.segment + 1) from None
        return [self.jobs.check_text(replace(request, prompt=prompt)) for prompt in prompts]

    async def precheck(self, draft: StoryDraft, frames: int) -> None:
        """What needs no image bytes, as for /kf2v: rate limit, prompts, content rules, channel, budget."""
        self.jobs.rate_limiter.hit(draft.user_id)
        requests = self.segment_requests(draft.request, frames)
        for request in requests:  # each segment's prompt (and the shared negative prompt) against the rules
            await self.jobs.check_content_rules(draft.guild_id, request)
        await self.jobs.check_channel(draft.guild_id, draft.channel_id)
        # A first look at the budget for the whole story (read-only; admission decides again, atomically).
        budget = self.jobs.budget
        periods = budget.periods()
        total = sum(self._cost(r) for r in requests)
        policy, usage = await self.jobs.store.policy_and_usage(
            draft.guild_id, draft.user_id, periods.day, periods.month
        )
        budget.refuse_if_over(usage, policy, total, periods)

    def _cost(self, request: JobRequest) -> int:
        return self.jobs.budget.estimate(request.model, request.resolution, request.duration)

    async def submit(self, draft: StoryDraft) -> tuple[Story, list[Job]]:
        """Check and normalise the frames, then reserve the whole story and queue every segment, or refuse whole."""
        requests = self.segment_requests(draft.request, len(draft.frames))
        checked = [await self.jobs.image_workers.check(data, self.jobs.image_limits) for data in draft.frames]
        try:
            limits = self.jobs.image_limits
            decodes = self.jobs.image_workers.budget(limits)  # the decodes of every request share it
            frames = [c.data for c in checked]
            normalised = await asyncio.to_thread(
                normalise_frames, frames, memory_budget=limits.memory_budget, hold=decodes.hold
            )
        except FrameTooLarge as exc:
            raise InvalidInput(
                "story.frame_over_memory",
                frame=exc.index + 1,
                width=exc.size[0],
                height=exc.size[1],
                target=f"{exc.target[0]}×{exc.target[1]}",
            ) from None
        except FrameError as exc:
            raise InvalidInput("story.frame_unreadable", frame=exc.index + 1) from None
        media = self.jobs.media
        refs: list[str] = []
        written: list[str] = []
        for frame in normalised:
            ref, new = await asyncio.to_thread(media.put_frame, frame.data, frame.content_type)
            refs.append(ref)
            written += [ref] if new else []
        budget = self.jobs.budget
        cost_each = self._cost(requests[0])
        total = cost_each * len(requests)
        periods = budget.periods()
        new_story = NewStory(
            guild_id=draft.guild_id,
            channel_id=draft.channel_id,
            user_id=draft.user_id,
            locale=draft.locale,
            model=requests[0].model,
            resolution=requests[0].resolution,
            seed=draft.request.seed,
            prompts=tuple(r.prompt for r in requests),
            frames=tuple(refs),
            cost_reserved=total,
        )

        def admit_whole(usage: Any, policy: Any) -> None:
            # The story as one request for the member limits, and its whole cost against the budgets.
            budget.refuse_if_over(usage, policy, total, periods)

        async def insert_story(tx: Transaction) -> list[NewJob]:
            story_id = await StoryStore.insert(tx, new_story)
            return [
                NewJob(
                    guild_id=draft.guild_id,
                    channel_id=draft.channel_id,
                    user_id=draft.user_id,
                    locale=draft.locale,
                    request=request,
                    first_frame=refs[k],
                    last_frame=refs[k + 1],
                    story_id=story_id,
                    segment_index=k,
                )
                for k, request in enumerate(requests)
            ]

        try:
            segment_jobs = await self.jobs.store.create_jobs(
                draft.guild_id, draft.user_id, cost=cost_each, period_day=periods.day, period_month=periods.month,
                admit=admit_whole, prepare=insert_story,
            )  # fmt: skip
        except BaseException:
            for ref in written:  # a refused story leaves nothing behind
                media.remove_frame(ref)
            raise
        story_id = segment_jobs[0].story_id
        assert story_id is not None
        story = await self.stories.get(story_id)
        assert story is not None
        log.info(
            "story %s accepted: guild %s user %s, %d segments, %s %s, reserved %d",
            story.id, story.guild_id, story.user_id, story.segments, story.model, story.resolution, total,
            extra={"guild_id": story.guild_id, "user_id": story.user_id},
        )  # fmt: skip
        for job in segment_jobs:
            self.jobs.worker.enqueue(job)
        return story, segment_jobs

    async def attach_conversation(self, story_id: int, *, thread_id: int | None, status_message_id: int | None) -> None:
        """Record the story's status message and thread once they exist."""
        await self.stories.set_messages(story_id, thread_id=thread_id, status_message_id=status_message_id)

    # --- the story's progress ----------------------------------------------------------------------------
    def segment_changed(self, job: Job) -> None:
        """A segment job moved (called by SegmentRouter): advance its story in the background."""
        if job.story_id is None:
            return
        task = asyncio.get_running_loop().create_task(self._advance_logged(job.story_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _advance_logged(self, story_id: int) -> None:
        try:
            await self.advance(story_id)
        except Exception:
            log.exception("story %s: advancing failed; it resumes at the next segment event or restart", story_id)

    async def resume(self) -> int:
        """After a (re)start: carry on every unfinished story. Returns how many were looked at."""
        unfinished = await self.stories.unfinished()
        for story in unfinished:
            await self._advance_logged(story.id)
        return len(unfinished)

    async def wait_idle(self) -> None:
        """Tests and shutdown: let scheduled advances finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        """Shutdown: cancel advances in progress (each resumes from the database at the next start)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def advance(self, story_id: int) -> None:
        """Take the story's next step, one pass at a time per story in this process."""
        story = await self.stories.get(story_id)
        if story is None or _ended(story):
            # A late segment event (a cancelled segment settling after the story ended): nothing to do, and no
            # per-story state is created for a story that has ended (a Redo reopens it from the database).
            self._shown.pop(story_id, None)
            return
        async with self._story_turn(story_id):
            ended = await self._advance(story_id)
        if ended:
            self._shown.pop(story_id, None)  # nothing more happens to it: its last status is not kept

    @contextlib.asynccontextmanager
    async def _story_turn(self, story_id: int) -> AsyncIterator[None]:
        """One pass at a time per story. The lock's entry lives only while a caller holds or awaits it, so no
        path (a refused Redo, a cancel, an advance) leaves one behind, and none is dropped while still in use
        (which would let a newcomer make a second lock and run beside its holder)."""
        lock, users = self._locks.get(story_id) or (asyncio.Lock(), 0)
        self._locks[story_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[story_id]
            if users == 1:
                del self._locks[story_id]
            else:
                self._locks[story_id] = (lock, users - 1)

    async def _advance(self, story_id: int) -> bool:
        """One step; True when the story has ended (final, nothing left to join or post)."""
        story = await self.stories.get(story_id)
        if story is None:
            return True
        jobs = await self.stories.segment_jobs(story.id)
        statuses = segment_statuses(story.segments, jobs)
        decision = decide(story.segments, jobs)
        if story.state is StoryState.AWAITING_CHOICE:
            if not (story.partial_opt_in and decision.ready_prefix >= 1):
                return False
            await self._join_and_post(story, decision.ready_prefix, partial=True)
        elif _ended(story):
            return True
        elif decision.step is NextStep.WAIT:
            await self._show(story, statuses)
            return False
        else:
            await self._step(story, decision, jobs, statuses)
        after = await self.stories.get(story_id)  # the step may have ended it (posted, failed, cancelled)
        return after is None or _ended(after)

    async def _step(
        self, story: Story, decision: Decision, jobs: Sequence[SegmentJob], statuses: Sequence[SegmentStatus]
    ) -> None:
        await self._show(story, statuses)
        if decision.step is NextStep.RETRY:
            for segment in decision.retry:
                await self._retry(story, segment, jobs)
        elif decision.step is NextStep.JOIN:
            await self._join_and_post(story, story.segments, partial=False)
        elif decision.step is NextStep.ASK:
            if await self.stories.set_state(story.id, StoryState.AWAITING_CHOICE, expect=StoryState.RUNNING):
                await self._tell_failed(story, decision.ready_prefix)
        elif decision.step is NextStep.CANCEL:
            await self._cancel_rest(story, jobs)

    async def _show(self, story: Story, statuses: Sequence[SegmentStatus]) -> None:
        shown = (story.state, tuple(statuses))
        # Nothing to edit before the conversation is attached; remembered only once shown.
        if self.notifier is None or not story.status_message_id or self._shown.get(story.id) == shown:
            return
        self._shown[story.id] = shown
        try:
            await self.notifier.story_updated(story, shown[1])
        except Exception:
            log.exception("story %s: status update failed", story.id)

    async def _retry(self, story: Story, segment: int, jobs: Sequence[Any]) -> None:
        failed = max((j for j in jobs if j.segment == segment), key=lambda j: j.job_id)
        old = await self.jobs.store.get(failed.job_id)
        assert old is not None
        request = replace(old.request, seed=new_seed(old.request.seed))
        try:
            new_jobs = await self._admit_segment(story, segment, request, old, expect_newest=failed.job_id)
        except (QuotaExceeded, QueueFull) as exc:
            log.warning("story %s: the retry of segment %d was refused (%s)", story.id, segment + 1, exc.key)
            if await self.stories.set_state(story.id, StoryState.AWAITING_CHOICE, expect=StoryState.RUNNING):
                await self._tell_failed(story, decide(story.segments, jobs).ready_prefix, reason="story.retry_refused")
            return
        for job in new_jobs:
            log.info("story %s: segment %d retried as job %s with a new seed", story.id, segment + 1, job.id)
            self.jobs.worker.enqueue(job)

    async def _admit_segment(
        self, story: Story, segment: int, request: JobRequest, template: Job, *, expect_newest: int | None
    ) -> list[Job]:
        """One new job for `segment`, reserved like any job. With `expect_newest` (a retry), admitted only while
        that job is still the segment's newest (two advances, or two processes, never both retry it); without
        (a Redo), only while the story is still the finished generation it was read as (two quick Redo choices
        make one regeneration, the other is refused). The story's own segments never count against its member's
        queue limit: the story took one place when it was admitted, and a retry keeps it."""
        budget = self.jobs.budget
        cost = self._cost(request)
        periods = budget.periods()
        retry = expect_newest is not None

        def admit_money(usage: GuildUsage, policy: Any) -> None:
            # The store counts a running story as one request; a retry is part of it, a Redo a new request.
            budget.refuse_if_over(replace(usage, member_active_jobs=0) if retry else usage, policy, cost, periods)

        redo_taken = False

        async def still_newest(tx: Transaction) -> list[NewJob]:
            nonlocal redo_taken
            if expect_newest is not None:
                if await StoryStore.newest_segment_job(tx, story.id, segment) != expect_newest:
                    return []
            elif await StoryStore.next_generation(tx, story.id, expect_generation=story.generation) is None:
                redo_taken = True
                return []
            return [
                NewJob(
                    guild_id=story.guild_id,
                    channel_id=story.channel_id,
                    user_id=story.user_id,
                    locale=story.locale,
                    request=request,
                    first_frame=template.first_frame,
                    last_frame=template.last_frame,
                    parent_job_id=template.id,
                    story_id=story.id,
                    segment_index=segment,
                )
            ]

        admitted = await self.jobs.store.create_jobs(
            story.guild_id, story.user_id, cost=cost, period_day=periods.day, period_month=periods.month,
            admit=admit_money, prepare=still_newest,
        )  # fmt: skip
        if redo_taken:
            raise InvalidInput("story.redo_busy")
        return admitted

    def joined_path(self, story: Story) -> Path:
        """Where this generation of the story is joined to."""
        return self.jobs.media.videos / f"story-{story.id}-{story.generation}.mp4"

    async def _join_and_post(self, story: Story, segments: int, *, partial: bool) -> None:
        destination = self.joined_path(story)
        redelivery = not story.join_due  # joined by an earlier pass, maybe posted before a crash
        if story.join_due:
            videos = await self.stories.current_videos(story.id)
            try:
                if await asyncio.to_thread(_videos_missing, videos, range(segments)):
                    raise FileNotFoundError("a segment's video is missing")
                paths = [Path(videos[k]) for k in range(segments)]
                if segments == 1:
                    await asyncio.to_thread(_copy_atomically, paths[0], destination)
                else:
                    await asyncio.to_thread(self._joiner, paths, destination)
            except Exception:
                # Unreadable or missing segments: retrying the same files can't help. The segments stay paid.
                log.exception("story %s: the join failed", story.id)
                if await self.stories.set_state(story.id, StoryState.FAILED, error_key="story.join_failed"):
                    await self._tell_failed(story, 0, reason="story.join_failed")
                return
            if not await self.stories.mark_joined(story.id, story.generation, str(destination)):
                return  # another pass recorded this generation's join first; it posts
            refreshed = await self.stories.get(story.id)
            assert refreshed is not None
            story = refreshed
        if not story.post_due or self.notifier is None:
            return
        video = Video(path=destination, size=destination.stat().st_size, url=None, url_expires_at=None)
        try:
            message_id = await self.notifier.story_deliver(
                story, video, partial=partial, redelivery=redelivery, links=lambda: self.segment_links(story, segments)
            )
        except DeliveryError as exc:
            if exc.permanent:
                log.warning("story %s: posting failed for good (%s)", story.id, exc.reason)
                await self.stories.set_state(story.id, StoryState.FAILED, error_key="job.failed.undeliverable")
                return
            self._retry_post_later(story.id, exc.reason)
            return
        self._post_failures.pop(story.id, None)
        final = StoryState.PARTIAL if partial else StoryState.DELIVERED
        if await self.stories.mark_posted(story.id, story.generation, message_id, final):
            # Posted and recorded: the file has served its purpose (a redo joins again from the segments, which
            # the media sweep keeps for the retention period), so it is not kept to fill the disk.
            await asyncio.to_thread(destination.unlink, missing_ok=True)
        await self._refresh_status(story.id)
        log.info("story %s delivered (generation %d, %s)", story.id, story.generation, final.value)

    def _retry_post_later(self, story_id: int, reason: str) -> None:
        """A temporary failure of the joined video's post (Discord down, a permission missing): try again after a
        back-off, as a job's delivery does, instead of waiting for an event that may never come."""
        failures = self._post_failures[story_id] = self._post_failures.get(story_id, 0) + 1
        ceiling = min(self.post_backoff_max_s, self.post_backoff_s * 2 ** min(failures - 1, 30))
        delay = ceiling * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret
        log.warning("story %s: posting failed (%s); trying again in %.1f s", story_id, reason, delay)
        task = asyncio.get_running_loop().create_task(self._advance_after(story_id, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _advance_after(self, story_id: int, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._advance_logged(story_id)

    async def _refresh_status(self, story_id: int) -> None:
        """Show the story's status message as it now stands (a final state drops its Cancel button)."""
        story = await self.stories.get(story_id)
        if story is not None:
            await self._show(story, segment_statuses(story.segments, await self.stories.segment_jobs(story.id)))

    async def segment_links(self, story: Story, segments: int) -> list[tuple[str, datetime | None]]:
        """The provider's links to the first `segments` segments (fresh: a task's link is re-read), for a joined
        video too large to upload; a segment whose link can't be had is left out."""
        newest: dict[int, int] = {}
        for segment_job in await self.stories.segment_jobs(story.id):
            if segment_job.state is JobState.DELIVERED:
                newest[segment_job.segment] = segment_job.job_id
        links = []
        for segment in range(segments):
            job = await self.jobs.store.get(newest[segment]) if segment in newest else None
            client = self.jobs.worker.clients.get(job.account or "") if job is not None else None
            if job is None or client is None or job.task_id is None:
                continue
            try:
                result = await client.get_task(job.task_id)
            except Exception as exc:  # the provider's trouble only costs this one link
                log.warning("story %s: no link for segment %d (%s)", story.id, segment + 1, type(exc).__name__)
                continue
            if result.video_url:
                links.append((result.video_url, job.video_url_expires_at))
        return links

    async def _tell_failed(self, story: Story, ready: int, *, reason: str = "story.failed") -> None:
        await self._refresh_status(story.id)
        if self.notifier is None:
            return
        # Segments that run on settle later: counted at their reservation (the most they can cost), or the story
        # would say 0.00 while they run and are paid. After a cancel only those already generating run on.
        running_on = _GENERATING if reason == "story.cancelled" else _UNFINISHED
        charged = await self.stories.charged(story.id, in_flight=running_on)
        try:
            await self.notifier.story_failed(
                story, charged=charged, ready=ready, can_deliver_partial=ready >= 1, reason=reason
            )
        except Exception:
            log.exception("story %s: telling its thread failed", story.id)

    async def _cancel_rest(self, story: Story, jobs: Sequence[Any]) -> None:
        actor = Actor(story.user_id)
        for job in jobs:
            if job.state in (JobState.QUEUED, JobState.SUBMITTING, JobState.PENDING):
                # Queued: cancelled now. Being submitted or waiting at the provider: cancelled there once it has
                # a task, and never sent again (the worker honours a pending Cancel before any resend).
                with contextlib.suppress(BotError):  # already running or finished: it settles or releases itself
                    await self.jobs.cancel(job.job_id, actor)
            elif job.state is JobState.RUNNING:
                # Too late to stop, and paid if it succeeds; but should its task fail for the provider's own
                # reasons, it is not sent again (nor charged).
                await self.jobs.store.update(job.job_id, cancel_requested=True)
        if await self.stories.set_state(story.id, StoryState.CANCELED, expect=StoryState.RUNNING):
            await self._tell_failed(story, 0, reason="story.cancelled")

    # --- the user's choices -----------------------------------------------------------------------------
    async def cancel(self, story_id: int, actor: Actor) -> Story:
        """Stop a running story: segments still queued or waiting at the provider are cancelled (their money
        released); one already generating finishes and is paid, as for any job; the rest never starts."""
        story = await self._story_for(story_id, actor)
        if story.state is not StoryState.RUNNING:
            raise InvalidInput("story.not_running")
        async with self._story_turn(story.id):
            await self._cancel_rest(story, await self.stories.segment_jobs(story.id))
        refreshed = await self.stories.get(story.id)
        assert refreshed is not None
        if _ended(refreshed):
            self._shown.pop(story.id, None)  # its cancelled status was the last one shown
        return refreshed

    async def deliver_partial(self, story_id: int, actor: Actor) -> Story:
        """The user chose "deliver as far as it got": join and post the segments ready from the start."""
        story = await self._story_for(story_id, actor)
        if not await self.stories.opt_in_partial(story.id):
            raise InvalidInput("story.no_choice")
        await self.advance(story.id)
        refreshed = await self.stories.get(story.id)
        assert refreshed is not None
        return refreshed

    async def redo(self, story_id: int, segment: int, actor: Actor) -> Job:
        """Run one segment again with a new seed, budgeted like a new job; the story re-joins when it is done."""
        self.jobs.rate_limiter.hit(actor.user_id)
        story = await self._story_for(story_id, actor)
        if story.state is not StoryState.DELIVERED or not 0 <= segment < story.segments or story.deleted_at:
            raise InvalidInput("story.no_redo")  # a deleted story stays down
        current = [j for j in await self.stories.segment_jobs(story.id) if j.segment == segment]
        if not current:
            raise InvalidInput("story.no_redo")
        old = await self.jobs.store.get(max(current, key=lambda j: j.job_id).job_id)
        assert old is not None
        videos = await self.stories.current_videos(story.id)
        others = [k for k in range(story.segments) if k != segment]
        if await asyncio.to_thread(_videos_missing, videos, others):
            raise InvalidInput("story.videos_gone")  # the other segments are needed for the new join
        await self.jobs.check_channel(story.guild_id, story.channel_id)
        request = replace(old.request, seed=new_seed(old.request.seed))
        await self.jobs.check_content_rules(story.guild_id, request)  # a rule added since the story began counts
        async with self._story_turn(story.id):
            new_jobs = await self._admit_segment(story, segment, request, old, expect_newest=None)
        self._shown.pop(story.id, None)
        for job in new_jobs:
            self.jobs.worker.enqueue(job)
        return new_jobs[0]

    async def delete_result(self, story_id: int, actor: Actor, *, guild_id: int) -> Story:
        """Take a posted story down (the requester, the guild's managers, the owners): record who did, and remove
        the joined video and its segments' videos. What it cost stays spent; the caller removes the messages."""
        story = await self._story_for(story_id, actor)
        if story.guild_id != guild_id:
            raise NotAllowed("job.not_yours")
        if story.state not in (StoryState.DELIVERED, StoryState.PARTIAL):
            raise InvalidInput("story.not_posted", story_id=story.id)
        deleted = await self.stories.mark_deleted(story.id, actor.user_id)
        if deleted is None:
            raise InvalidInput("story.already_deleted", story_id=story.id)
        files = [deleted.joined_path, *(await self.stories.current_videos(story.id)).values()]
        for path in (Path(f) for f in files if f):
            await asyncio.to_thread(path.unlink, missing_ok=True)
        log.info("story %s: result deleted", story.id, extra={"guild_id": guild_id})
        return deleted

    async def _story_for(self, story_id: int, actor: Actor) -> Story:
        story = await self.stories.get(story_id)
        if story is None:
            raise InvalidInput("story.unknown")
        if not (actor.is_owner or actor.is_manager or actor.user_id == story.user_id):
            raise NotAllowed("job.not_yours")
        return story


_GENERATING = (JobState.RUNNING, JobState.SUCCEEDED)
_UNFINISHED = (JobState.QUEUED, JobState.SUBMITTING, JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED)


def _ended(story: Story) -> bool:
    """Nothing more happens to the story unless its member chooses a Redo."""
    if story.state in (StoryState.FAILED, StoryState.CANCELED):
        return True
    return story.state in (StoryState.DELIVERED, StoryState.PARTIAL) and not (story.join_due or story.post_due)


def _videos_missing(videos: Mapping[int, str], segments: Iterable[int]) -> bool:
    return any(k not in videos or not Path(videos[k]).is_file() for k in segments)


def _copy_atomically(source: Path, destination: Path) -> None:
    temp = destination.with_name(f".{destination.name}.part")
    shutil.copyfile(source, temp)
    temp.replace(destination)


class SegmentRouter:
    """The notifier the worker talks to: a story's segment jobs go to the story, every other job to `inner`.

    A segment's video is not posted on its own: `deliver` only confirms it is on disk (the worker then
    records the job DELIVERED), and the job's events advance its story instead of editing a message.
    """

    def __init__(self, inner: Notifier) -> None:
        self.inner = inner
        self.stories: StoryService | None = None  # attached once the services exist

    async def job_updated(self, job: Job, progress: Progress) -> None:
        """A segment's progress advances its story; any other job's goes to the real notifier."""
        if job.story_id is None:
            await self.inner.job_updated(job, progress)
        elif self.stories is not None and job.state in (JobState.DELIVERED, JobState.RUNNING, JobState.PENDING):
            self.stories.segment_changed(job)

    async def deliver(self, job: Job, video: Video, *, redelivery: bool) -> None:
        """A segment is only checked to be on disk; any other job's video is posted."""
        if job.story_id is None:
            await self.inner.deliver(job, video, redelivery=redelivery)
            return
        if not video.path.exists():
            # Too large to download: a segment can't be joined from a link.
            raise DeliveryError("the segment's video is not on disk", permanent=True)

    async def job_failed(self, job: Job) -> None:
        """A segment's failure advances its story (retry or ask); any other job's is explained."""
        if job.story_id is None:
            await self.inner.job_failed(job)
        elif self.stories is not None:
            self.stories.segment_changed(job)

    async def owner_alert(self, key: str, **params: Any) -> None:
        """Owner alerts pass through."""
        await self.inner.owner_alert(key, **params)

    async def close(self) -> None:
        """Stop the stories' background work, then the real notifier."""
        if self.stories is not None:
            await self.stories.stop()
        close = getattr(self.inner, "close", None)
        if close is not None:
            await close()
