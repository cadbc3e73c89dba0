"""JobService: the one entry point the cogs call. Validates, stores, admits, enqueues, cancels.

No discord import: callers pass plain values (ids, locale, bytes) and get `Job`s or `BotError`s back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from bot.catalog import Catalog, ModelSpec
from bot.errors import ContentRefused, InvalidImage, InvalidInput, JobNotFound, NotAllowed, RateLimited
from bot.jobs.images import CheckedCache, CheckedImage, DecodeBudget, ImageLimits, check_image
from bot.jobs.media import MediaStore
from bot.jobs.media_options import check_media_options, extend_total
from bot.jobs.models import Job, JobRequest, JobState, NewJob, Pause, PauseScope
from bot.jobs.ports import Progress
from bot.jobs.probe import probe_audio, probe_clip
from bot.jobs.quota import BudgetReport, BudgetService
from bot.jobs.rules import (
    DEFAULT_SCOPE,
    MAX_RULES_PER_SCOPE,
    CompiledRules,
    ContentRule,
    InvalidRule,
    RuleChange,
    RulesCache,
    compile_rules,
    phrase_key,
)
from bot.jobs.store import ChannelEdit, JobStore, StaleState, utcnow
from bot.jobs.worker import Worker

_T = TypeVar("_T")
log = logging.getLogger(__name__)

MAX_PROMPT = 800
MAX_NEGATIVE_PROMPT = 500
MAX_SEED = 2_147_483_647
MAX_VARIATIONS = 4  # /kf2v count and the Vary button: at most this many videos at once


def variation_seeds(seed: int | None, count: int) -> list[int | None]:
    """One seed per variation: the asked seed and the ones after it (wrapping), or random ones; a single
    video keeps the seed as asked (None: the provider picks)."""
    if count == 1:
        return [seed]
    start = random.randint(0, MAX_SEED) if seed is None else seed  # noqa: S311 - a seed, not a secret
    return [(start + k) % (MAX_SEED + 1) for k in range(count)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Draft:
    """A member's request as the cog read it: who asked where, the options, the uploaded frames' bytes."""

    guild_id: int
    channel_id: int
    user_id: int
    locale: str
    request: JobRequest
    first_image: bytes = b""  # empty until the attachments are downloaded (after `precheck`)
    last_image: bytes | None = None
    # A driving audio file (issue 12): `audio_attached` is known before the download (for `precheck`),
    # `audio` holds the bytes after it; both are checked against the model's catalog entry before reserving.
    audio_attached: bool = False
    audio: bytes | None = None
    count: int = 1  # variations (issue 19): that many jobs with different seeds, reserved whole


@dataclass(frozen=True, slots=True, kw_only=True)
class RemixEdits:
    """What the Remix modal lets a member change; None duration: keep the job's."""

    prompt: str
    negative_prompt: str | None
    resolution: str
    duration: int | None = None


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts on a job, with the roles that let them act on other members' jobs."""

    user_id: int
    is_manager: bool = False  # Manage Server in the job's guild
    is_owner: bool = False  # one of the bot's owners


def visible_text(text: str | None) -> str:
    """The text without whitespace and invisible format characters (zero-width spaces, joiners, BOM)."""
    if not text:
        return ""
    return "".join(ch for ch in text if not ch.isspace() and unicodedata.category(ch) != "Cf")


class UserRateLimiter:
    """At most `per_minute` commands per user in any 60 s: one member cannot flood the queue.

    Users idle for a full window are forgotten (swept at most once per window), so memory follows the
    members active in the last two minutes, not everyone who ever sent a command.
    """

    WINDOW_S = 60.0

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._hits: dict[int, deque[float]] = {}
        self._last_sweep = clock()

    def __len__(self) -> int:
        """Users currently remembered."""
        return len(self._hits)

    def hit(self, user_id: int) -> None:
        """Count one command; `RateLimited` (with when to retry) instead when the user is at the limit."""
        now = self._clock()
        if now - self._last_sweep >= self.WINDOW_S:
            self._forget_idle(now)
        hits = self._hits.setdefault(user_id, deque())
        while hits and now - hits[0] >= self.WINDOW_S:
            hits.popleft()
        if len(hits) >= self._per_minute:
            raise RateLimited(retry_ts=int(time.time() + self.WINDOW_S - (now - hits[0])) + 1)
        hits.append(now)

    def _forget_idle(self, now: float) -> None:
        self._last_sweep = now
        idle = [user for user, hits in self._hits.items() if not hits or now - hits[-1] >= self.WINDOW_S]
        for user in idle:
            del self._hits[user]


class ImageWorkers:
    """At most `limit` frames decoded and re-encoded at once, holding together at most the limits'
    `memory_budget` bytes of pixels (`budget`: a 0.3 MB PNG can decode to 256 MB).

    Bytes that passed unchanged before, under the same limits, are not decoded again (`cache`).
    Keeps counts for tests and metrics: `checked` (frames that reached decoding), `active`, `peak`.
    """

    def __init__(self, limit: int, cache: CheckedCache | None = None) -> None:
        if limit < 1:
            raise ValueError("image workers must be at least 1")
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self.cache = cache or CheckedCache()
        self.checked = 0
        self.active = 0
        self.peak = 0
        self._budgets: dict[int, DecodeBudget] = {}  # by `memory_budget` (one in the app; tests vary it)
        self.refused_over_memory = 0

    def budgets(self) -> list[DecodeBudget]:
        """Every budget in use (one per `memory_budget` seen), for metrics."""
        return list(self._budgets.values())

    def budget(self, limits: ImageLimits) -> DecodeBudget:
        """The shared budget of decodes under these limits."""
        budget = self._budgets.get(limits.memory_budget)
        if budget is None:
            budget = self._budgets[limits.memory_budget] = DecodeBudget(limits.memory_budget)
        return budget

    async def check(self, data: bytes, limits: ImageLimits) -> CheckedImage:
        """`check_image` in a thread once a slot is free; raises its `InvalidImage`."""
        return await self._in_slot(limits, lambda check: check(data))

    async def check_and_store(
        self, frames: Sequence[bytes], limits: ImageLimits, store: Callable[[bytes, str], tuple[str, bool]]
    ) -> list[tuple[str, bool]]:
        """Check every frame, then store each with `store(data, mime)`: [(reference, newly written), ...].

        One slot, one hand-off to a thread for all of them (profiled: the four hand-offs a job used to make,
        each a wake-up of the event loop and of a thread, delayed the admission transactions in flight). The
        frames are decoded one after the other, so the limit on frames decoded at once holds. Nothing is stored
        unless every frame passed.
        """

        def work(check: Callable[[bytes], CheckedImage]) -> list[tuple[str, bool]]:
            checked = [check(data) for data in frames]
            return [store(image.data, image.mime) for image in checked]

        return await self._in_slot(limits, work)

    async def _in_slot(self, limits: ImageLimits, work: Callable[[Callable[[bytes], CheckedImage]], _T]) -> _T:
        """`work(check)` in a worker thread once a slot is free; `check` is the remembered verdict or the full one."""
        decoded: list[int] = []  # appended by the thread, counted once back
        hold = self.budget(limits).hold

        def check(data: bytes) -> CheckedImage:
            image = self.cache.lookup(data, limits)
            if image is None:
                decoded.append(1)
                try:
                    image = check_image(data, limits, hold)
                except InvalidImage as refusal:
                    if refusal.key == "image.over_memory":
                        self.refused_over_memory += 1
                    raise
                self.cache.remember(image, limits)
            return image

        async with self._slots:
            self.active += 1
            self.peak = max(self.peak, self.active)
            try:
                return await asyncio.to_thread(work, check)
            finally:
                self.active -= 1
                self.checked += len(decoded)


class JobService:
    """What the Discord layer asks of the job engine: admit, look up, cancel and account for jobs; set rules."""

    def __init__(
        self,
        *,
        store: JobStore,
        media: MediaStore,
        budget: BudgetService,
        worker: Worker,
        catalog: Catalog,
        region: str,
        image_limits: ImageLimits,
        rate_limiter: UserRateLimiter,
        image_workers: ImageWorkers | None = None,
        on_rule_refusal: Callable[[ContentRule, str], None] | None = None,
    ) -> None:
        self.store = store
        self.media = media
        self.budget = budget
        self.worker = worker
        self.catalog = catalog
        self.region = region
        self.image_limits = image_limits
        self.rate_limiter = rate_limiter
        self.image_workers = image_workers or ImageWorkers(2)
        self.on_rule_refusal = on_rule_refusal  # (rule, field): the metrics' counter
        self._rules = RulesCache()

    # --- new jobs ------------------------------------------------------------------------------------
    def check_text(self, request: JobRequest, *, with_audio: bool = False) -> JobRequest:
        """Model/resolution/prompt/seed/template/duration/sound/audio rules, before any image work.

        Returns the request with the default model, resolution, duration and sound filled in. `with_audio`:
        a driving audio file comes with the request (not stored yet).
        """
        model_key = request.model or self.catalog.default_model
        if not self.catalog.offers(model_key, self.region):
            raise InvalidInput("input.unknown_model", model=model_key)
        spec = self.catalog.model(model_key)
        resolution = request.resolution or spec.default_resolution
        if resolution not in spec.resolutions:
            raise InvalidInput(
                "input.resolution", model=model_key, resolution=resolution, allowed=", ".join(spec.resolutions)
            )
        if request.template is not None:
            if not spec.templates:
                with_templates = [m.key for m in self.catalog.models_in(self.region) if m.templates]
                raise InvalidInput("input.template_model", model=model_key, models=", ".join(with_templates))
            if request.template not in spec.templates:
                raise InvalidInput(
                    "input.template_unknown", template=request.template, allowed=", ".join(spec.templates)
                )
        else:
            if not visible_text(request.prompt):
                raise InvalidInput("input.prompt_blank")
            # The model's own limit (wan2.7 takes 5000 and silently truncates longer text: refuse it here).
            prompt_limit = spec.prompt_max_chars
            if len(request.prompt) > prompt_limit:
                raise InvalidInput("input.prompt_long", length=len(request.prompt), limit=prompt_limit)
        negative_limit = spec.negative_prompt_max_chars
        if request.negative_prompt is not None and len(request.negative_prompt) > negative_limit:
            raise InvalidInput("input.negative_long", length=len(request.negative_prompt), limit=negative_limit)
        if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
            raise InvalidInput("input.seed", limit=MAX_SEED)
        choice = check_media_options(
            self.catalog,
            self.region,
            spec,
            duration=request.duration,
            sound=request.sound,
            with_audio=with_audio or request.audio is not None,
            # /kf2v always has a last frame; an Extend continues a clip alone; an effect uses its first frame.
            with_last_frame=request.first_clip is None and request.template is None,
            with_clip=request.first_clip is not None,
            with_template=request.template is not None,
        )
        return replace(request, model=model_key, resolution=resolution, duration=choice.duration, sound=choice.sound)

    async def check_channel(self, guild_id: int, channel_id: int) -> None:
        """`NotAllowed` (naming the allowed channels) when the guild limits commands to other channels."""
        policy = await self.budget.policy(guild_id)
        if policy.allowed_channels and channel_id not in policy.allowed_channels:
            raise NotAllowed("quota.channel_not_allowed", channel_ids=policy.allowed_channels)  # the UI renders them

    async def precheck(self, draft: Draft) -> None:
        """Everything that needs no image bytes: run before downloading attachments."""
        if not 1 <= draft.count <= MAX_VARIATIONS:
            raise InvalidInput("input.count", limit=MAX_VARIATIONS)
        self.rate_limiter.hit(draft.user_id)
        await self._request_checks(
            draft.guild_id, draft.channel_id, draft.user_id, draft.request, with_audio=draft.audio_attached
        )

    async def _request_checks(
        self, guild_id: int, channel_id: int, user_id: int, request: JobRequest, *, with_audio: bool = False
    ) -> None:
        """Text, content rules, channel and budget: the checks /kf2v, /kf2v-effect, Regenerate and Remix
        share, cheapest first.

        The budget is read here only to refuse early (before downloads and decoding); the reservation
        itself is made atomically at admission.
        """
        request = self.check_text(request, with_audio=with_audio)
        await self.check_content_rules(guild_id, request)
        await self.check_channel(guild_id, channel_id)
        await self.budget.precheck(guild_id, user_id, request.model, request.resolution, seconds=request.duration)

    async def check_content_rules(self, guild_id: int, request: JobRequest) -> None:
        """Refuse a prompt or negative prompt that contains one of the guild's or the owners' banned phrases.

        Counted per guild and month (for /kf2v-quota) and in the metrics; nothing else is touched.
        """
        compiled = await self._compiled_rules(guild_id)
        for field, text in (("prompt", request.prompt), ("negative_prompt", request.negative_prompt)):
            rule = compiled.match(text)
            if rule is None:
                continue
            await self.store.count_rule_refusal(guild_id, self.budget.periods().month)
            if self.on_rule_refusal is not None:
                self.on_rule_refusal(rule, field)
            log.info("prompt refused by a content rule in guild %s (%s)", guild_id, field, extra={"guild_id": guild_id})
            raise ContentRefused(field=field, phrase=rule.phrase, is_default=rule.is_default)

    async def _compiled_rules(self, guild_id: int) -> CompiledRules:
        """The guild's rules and the defaults, compiled once per change (another process's too: by version)."""
        version = await self.store.content_rule_versions(guild_id)
        compiled = self._rules.get(guild_id, version)
        if compiled is None:
            own, defaults = await self.store.content_rules(guild_id), await self.store.content_rules(DEFAULT_SCOPE)
            compiled = compile_rules(own, defaults)
            self._rules.put(guild_id, version, compiled)
        return compiled

    async def submit(self, draft: Draft) -> Job:
        """`precheck`, then `submit_checked`: the queued job, or the first check's `BotError`."""
        await self.precheck(draft)
        return await self.submit_checked(draft)

    async def submit_checked(self, draft: Draft) -> Job:
        """Check the images (and audio), store them, reserve the budget and queue the job (after `precheck`)."""
        return (await self.submit_all_checked(replace(draft, count=1)))[0]

    async def submit_all_checked(self, draft: Draft) -> list[Job]:
        """`submit_checked` for `draft.count` variations (different seeds): all reserved, or all refused."""
        if not 1 <= draft.count <= MAX_VARIATIONS:
            raise InvalidInput("input.count", limit=MAX_VARIATIONS)
        request = self.check_text(draft.request, with_audio=draft.audio is not None)
        frames = [draft.first_image, draft.last_image] if draft.last_image else [draft.first_image]
        stored = await self.image_workers.check_and_store(frames, self.image_limits, self.media.put_frame)
        audio_written = False
        if draft.audio is not None:
            request, audio_written = await self._store_audio(request, draft.audio)
        try:
            return await self._admit_all(draft, request, stored)
        except BaseException:
            if audio_written and request.audio is not None:
                self.media.remove_frame(request.audio)  # a refused request leaves nothing behind
            raise

    async def _store_audio(self, request: JobRequest, data: bytes) -> tuple[JobRequest, bool]:
        """Probe a driving audio file against the model's limits (format, length, size) and store it: before
        any reservation, so a file the provider would refuse costs nothing."""
        limits = self.catalog.model(request.model).inputs.audio
        if limits is None:  # check_text refused this already; kept for a direct caller
            raise InvalidInput("input.audio_model", model=request.model, models="-")
        info = await asyncio.to_thread(probe_audio, data, limits)
        ref, written = await asyncio.to_thread(self.media.put_frame, data, info.content_type)
        return replace(request, audio=ref), written

    async def _admit_all(self, draft: Draft, request: JobRequest, stored: list[tuple[str, bool]]) -> list[Job]:
        """Reserve and queue `draft.count` jobs (one per variation seed) whose frames are checked and `stored`:
        all of them or, refused, none."""
        written = [ref for ref, new in stored if new]
        first_ref, last_ref = stored[0][0], (stored[1][0] if len(stored) > 1 else None)
        new_jobs = [
            NewJob(
                guild_id=draft.guild_id,
                channel_id=draft.channel_id,
                user_id=draft.user_id,
                locale=draft.locale,
                request=replace(request, seed=seed),
                first_frame=first_ref,
                last_frame=last_ref,
            )
            for seed in variation_seeds(request.seed, draft.count)
        ]
        try:
            if len(new_jobs) == 1:
                jobs = [await self.budget.admit(new_jobs[0])]
            else:
                jobs = await self.budget.admit_batch(new_jobs)
        except BaseException:
            for ref in written:  # a refused request leaves nothing behind
                self.media.remove_frame(ref)
            raise
        for job in jobs:
            log.info(
                "job %s accepted: guild %s user %s %s %s",
                job.id, job.guild_id, job.user_id, request.model, request.resolution,
                extra={"job_id": job.id, "guild_id": job.guild_id, "user_id": job.user_id},
            )  # fmt: skip
            self.worker.enqueue(job)
        return jobs

    async def regenerate(self, job_id: int, actor: Actor, locale: str, *, guild_id: int, channel_id: int) -> Job:
        """Same frames and prompt, a new seed, through every check a new /kf2v meets (rate limit, channel,
        budget; the caller checks it can post here), then the same atomic admission."""
        new_seed = random.randint(0, MAX_SEED)  # noqa: S311 - a seed, not a secret
        return await self._rerun(
            job_id, actor, locale, guild_id, channel_id, lambda request: replace(request, seed=new_seed)
        )

    async def remix(
        self, job_id: int, actor: Actor, edits: RemixEdits, locale: str, *, guild_id: int, channel_id: int
    ) -> Job:
        """Same frames (and seed) with the edited prompt, negative prompt, resolution and duration, through the
        path Regenerate takes: every check of a new /kf2v, then the atomic admission with the budget."""

        def edited(request: JobRequest) -> JobRequest:
            changed = replace(
                request,
                prompt=edits.prompt,
                negative_prompt=edits.negative_prompt or None,
                resolution=edits.resolution or request.resolution,
            )
            if edits.duration is not None and hasattr(changed, "duration"):
                changed = replace(changed, duration=edits.duration)  # type: ignore[call-arg,unused-ignore]
            return changed

        return await self._rerun(job_id, actor, locale, guild_id, channel_id, edited)

    async def _rerun(
        self,
        job_id: int,
        actor: Actor,
        locale: str,
        guild_id: int,
        channel_id: int,
        change: Callable[[JobRequest], JobRequest],
    ) -> Job:
        """A new job from an existing one's stored frames with `change` applied to its request."""
        self.rate_limiter.hit(actor.user_id)
        job = await self._job_for(job_id, actor)
        if job.guild_id != guild_id:  # a button can only spend the budget of the guild it was pressed in
            raise NotAllowed("job.not_yours")
        if job.anonymised_at is not None:  # its prompt and frames were erased (retention or forget-me)
            raise InvalidInput("job.erased")
        again = NewJob(
            guild_id=job.guild_id,
            channel_id=channel_id,
            user_id=actor.user_id,
            locale=locale,
            request=change(job.request),
            first_frame=job.first_frame,
            last_frame=job.last_frame,
            parent_job_id=job.id,
        )
        await self._request_checks(again.guild_id, again.channel_id, again.user_id, again.request)
        if not self.media.frame_path(job.first_frame).exists():
            raise InvalidInput("input.frames_gone")
        new_job = await self.budget.admit(again)
        self.worker.enqueue(new_job)
        return new_job

    # --- Extend (issue 12) ---------------------------------------------------------------------------
    def can_extend(self, job: Job) -> bool:
        """Whether a delivered job's video can be continued: its model continues clips and the file is here."""
        spec = self.catalog.models.get(job.request.model)
        return (
            job.state is JobState.DELIVERED
            and spec is not None
            and spec.extends_clips
            and job.video_path is not None
            and Path(job.video_path).exists()
        )

    def extend_limits(self, job: Job) -> tuple[int, int] | None:
        """(fewest, most) seconds the Extend modal may add to this job's video; None when it can't be extended."""
        spec = self.catalog.models.get(job.request.model)
        if spec is None or spec.inputs.clip is None or not self.can_extend(job):
            return None
        high = spec.duration_range[1]
        current = job.request.duration if job.request.duration is not None else spec.default_duration
        if current > spec.inputs.clip.max_seconds or current >= high:
            return None  # too long to be continued, or nothing left to add
        return 1, high - current

    async def extend(
        self,
        job_id: int,
        actor: Actor,
        prompt: str,
        added_seconds: int,
        locale: str,
        *,
        guild_id: int,
        channel_id: int,
        post_channel_id: int | None = None,
    ) -> Job:
        """Continue a delivered video by `added_seconds`: a new job with that video as its first clip.

        The provider returns (and bills) the WHOLE video, clip included, so the job's duration is the new
        total and it is budgeted as price x total (wan2.7 guide, 视频续写). Every check of a new /kf2v runs
        (rate limit, text, content rules, channel, budget) and the clip is probed against the model's clip
        limits, all before the reservation. `channel_id` is where the button was pressed (the channel rules
        apply there); `post_channel_id` where the job is followed (the parent's thread), default the same.
        """
        self.rate_limiter.hit(actor.user_id)
        parent = await self._job_for(job_id, actor)
        if parent.guild_id != guild_id:  # a button can only spend the budget of the guild it was pressed in
            raise NotAllowed("job.not_yours")
        spec = self.catalog.models.get(parent.request.model)
        if spec is None or not spec.extends_clips or spec.inputs.clip is None:
            raise InvalidInput("input.extend_model", model=parent.request.model)
        if not self.can_extend(parent) or parent.video_path is None:
            raise InvalidInput("input.frames_gone")
        data = await asyncio.to_thread(Path(parent.video_path).read_bytes)
        # Length is judged by extend_total (naming the clip limit); the probe checks format, size and sides.
        info = await asyncio.to_thread(probe_clip, data, replace(spec.inputs.clip, max_seconds=float("inf")))
        total = extend_total(spec, info.seconds, added_seconds)
        request = replace(parent.request, prompt=prompt, duration=total, audio=None, seed=None, first_clip="clip")
        await self._request_checks(parent.guild_id, channel_id, actor.user_id, request)
        clip_ref, written = await asyncio.to_thread(self.media.put_frame, data, info.content_type)
        new_job = NewJob(
            guild_id=parent.guild_id,
            channel_id=post_channel_id or channel_id,
            user_id=actor.user_id,
            locale=locale,
            request=self.check_text(replace(request, first_clip=clip_ref)),
            first_frame=parent.first_frame,  # kept for the status thumbnail; a clip job never sends it
            last_frame=None,
            parent_job_id=parent.id,
        )
        try:
            job = await self.budget.admit(new_job)
        except BaseException:
            if written:
                self.media.remove_frame(clip_ref)
            raise
        log.info(
            "job %s extends job %s to %s s", job.id, parent.id, total, extra={"job_id": job.id, "guild_id": guild_id}
        )
        self.worker.enqueue(job)
        return job

    # --- a delivered result: Vary, Details, Delete (issue 19) -----------------------------------------
    async def vary(
        self,
        job_id: int,
        actor: Actor,
        count: int,
        locale: str,
        *,
        guild_id: int,
        channel_id: int,
        post_channel_id: int | None = None,
    ) -> list[Job]:
        """`count` new jobs with the job's frames and request and new seeds, each a normal job in the fair
        queue, reserved whole (or refused whole) after every check a new /kf2v meets. `channel_id` is where the
        button was pressed (the channel rules apply there); `post_channel_id` where they are followed (the
        job's thread), default the same."""
        if not 1 <= count <= MAX_VARIATIONS:
            raise InvalidInput("input.count", limit=MAX_VARIATIONS)
        self.rate_limiter.hit(actor.user_id)
        job = await self._job_for(job_id, actor)
        if job.guild_id != guild_id:  # a button can only spend the budget of the guild it was pressed in
            raise NotAllowed("job.not_yours")
        await self._request_checks(job.guild_id, channel_id, actor.user_id, job.request)
        stored = [job.first_frame, job.last_frame, job.request.audio, job.request.first_clip]
        if any(ref is not None and not self.media.frame_path(ref).exists() for ref in stored):
            raise InvalidInput("input.frames_gone")
        fresh = variation_seeds(None, count) if count > 1 else [random.randint(0, MAX_SEED)]  # noqa: S311
        new_jobs = [
            NewJob(
                guild_id=job.guild_id,
                channel_id=post_channel_id or channel_id,
                user_id=actor.user_id,
                locale=locale,
                request=replace(job.request, seed=seed),
                first_frame=job.first_frame,
                last_frame=job.last_frame,
                parent_job_id=job.id,
            )
            for seed in fresh
        ]
        jobs = await self.budget.admit_batch(new_jobs)
        for new_job in jobs:
            self.worker.enqueue(new_job)
        log.info("jobs %s vary job %s", [j.id for j in jobs], job.id, extra={"job_id": job.id, "guild_id": guild_id})
        return jobs

    async def result_for(self, job_id: int, guild_id: int) -> Job:
        """A job as Details shows it to any member of its server; another server's job is refused (a crafted
        button id cannot read it)."""
        job = await self.get(job_id)
        if job.guild_id != guild_id:
            raise NotAllowed("job.not_yours")
        return job

    async def delete_result(self, job_id: int, actor: Actor, *, guild_id: int) -> Job:
        """Take a delivered video down (the requester, the guild's managers, the owners): record who did, and
        remove the kept video file. What it cost stays spent (the provider billed it; the ledger keeps it).
        The caller removes the posted messages."""
        job = await self._job_for(job_id, actor)
        if job.guild_id != guild_id:
            raise NotAllowed("job.not_yours")
        if job.state is not JobState.DELIVERED:
            raise InvalidInput("result.not_delivered", job_id=job.id)
        deleted = await self.store.mark_result_deleted(job.id, actor.user_id)
        if deleted is None:
            raise InvalidInput("result.already_deleted", job_id=job.id)
        if deleted.video_path:
            await asyncio.to_thread(Path(deleted.video_path).unlink, missing_ok=True)
        log.info("job %s: result deleted", job.id, extra={"job_id": job.id, "guild_id": guild_id})
        return deleted

    # --- existing jobs -------------------------------------------------------------------------------
    async def get(self, job_id: int) -> Job:
        """`JobNotFound` when the job is unknown; no ownership check (cancel and the buttons do their own)."""
        job = await self.store.get(job_id)
        if job is None:
            raise JobNotFound(job_id=job_id)
        return job

    async def _job_for(self, job_id: int, actor: Actor) -> Job:
        job = await self.get(job_id)
        if not (actor.is_owner or actor.user_id == job.user_id or actor.is_manager):
            raise NotAllowed("job.not_yours")
        return job

    async def attach_conversation(self, job_id: int, *, status_message_id: int | None, thread_id: int | None) -> Job:
        """Record where the job's status message and thread are, so updates and the video go there."""
        return await self.store.update(job_id, status_message_id=status_message_id, thread_id=thread_id)

    async def cancel(self, job_id: int, actor: Actor) -> Job:
        """Cancel while queued (at once) or pending at the provider (asks the provider); running is too late."""
        job = await self._job_for(job_id, actor)
        if job.is_final:
            raise InvalidInput("job.already_final", state=job.state.value)
        if job.state is JobState.QUEUED:
            self.worker.dequeue(job.id)
            try:
                job = await self.store.transition(
                    job.id, JobState.CANCELED, expect=JobState.QUEUED, release=True, error_key="job.canceled"
                )
            except StaleState as exc:  # picked for submission at this very moment
                job = exc.job
            else:
                await self.worker.notifier.job_failed(job)
                return job
        if job.state is JobState.SUBMITTING:
            return await self.store.update(job.id, cancel_requested=True)  # cancelled once it has a task id
        if job.state is JobState.PENDING:
            job = await self.store.update(job.id, cancel_requested=True)
            if await self.worker.cancel_at_provider(job):
                return job  # the poller sees CANCELED, releases the budget and tells the thread
        raise InvalidInput("job.too_late")

    async def jobs_for(self, guild_id: int, user_id: int, limit: int = 10) -> list[Job]:
        """The member's latest `limit` jobs in the guild, newest first."""
        return await self.store.jobs_for_user(guild_id, user_id, limit)

    async def queue_view(self) -> list[Job]:
        """Every job not yet finished (queued to succeeded-but-not-posted), in queue order, all guilds."""
        return await self.store.jobs_in_states(
            [JobState.QUEUED, JobState.SUBMITTING, JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED]
        )

    # --- owners: pauses ------------------------------------------------------------------------------
    async def pause(self, reason: str, *, guild_id: int | None = None, account: str | None = None) -> Pause:
        """Hold new submissions: everywhere, for one guild, or on one provider account. Jobs keep their place.

        Every pause is kept in the database (and announced), so it holds in whichever process dispatches and
        across restarts, until resumed through any process.
        """
        if guild_id is not None:
            scope, target = PauseScope.GUILD, str(guild_id)
        elif account is not None:
            scope, target = PauseScope.ACCOUNT, account
        else:
            scope, target = PauseScope.ALL, ""
        held = Pause(scope, target, reason or "paused", utcnow())
        await self.store.save_pause(held)
        self.worker.scheduler.pause(held)
        return held

    async def resume(self, *, guild_id: int | None = None, account: str | None = None) -> None:
        """Lift a pause. Without a scope: the pause of everything and every account's (not guilds')."""
        scheduler = self.worker.scheduler
        if guild_id is not None:
            await self.store.delete_pause(PauseScope.GUILD, str(guild_id))
            scheduler.resume(PauseScope.GUILD, str(guild_id))
        elif account is not None:
            await self.store.delete_pause(PauseScope.ACCOUNT, account)
            scheduler.resume(PauseScope.ACCOUNT, account)
        else:
            await self.store.delete_pause(PauseScope.ALL, "")
            scheduler.resume(PauseScope.ALL)
            # The accounts' pauses too, wherever they were found: the dispatcher may run in another process.
            stored = {held.target for held in await self.store.pauses() if held.scope is PauseScope.ACCOUNT}
            for paused_account in stored | set(scheduler.limits.paused()):
                if paused_account in self.worker.clients:  # "none" (no key configured) stays paused
                    await self.store.delete_pause(PauseScope.ACCOUNT, paused_account)
                    scheduler.resume(PauseScope.ACCOUNT, paused_account)
        self.worker.wake()

    def pauses(self) -> list[Pause]:
        """Every pause in force."""
        return self.worker.scheduler.pauses()

    def pause_for(self, guild_id: int) -> Pause | None:
        """What holds this guild's jobs, if anything (everything > every account > the guild)."""
        return self.worker.scheduler.pause_for(guild_id)

    async def load_pause_state(self) -> None:
        """Restore the persisted pauses after a start."""
        for held in await self.store.pauses():
            if held.scope is PauseScope.ACCOUNT and held.target not in self.worker.clients:
                continue  # an account no longer configured
            self.worker.scheduler.pause(held)

    @property
    def paused(self) -> bool:
        """Whether the owners paused everything."""
        return any(p.scope is PauseScope.ALL for p in self.worker.scheduler.pauses())

    # --- for the Discord layer -----------------------------------------------------------------------
    # Queries and policy edits the cogs and the Discord layer need, so they touch nothing else of the domain.
    def progress(self, job: Job) -> Progress:
        """Queue position / ETA / elapsed time of a job, as the status message shows it."""
        return self.worker.progress(job)

    def frame_path(self, ref: str) -> Path:
        """Where a stored keyframe is on disk (the status message attaches it)."""
        return self.media.frame_path(ref)

    def models(self) -> list[ModelSpec]:
        """The models of the running catalog in this region, in catalog order (the commands' choices)."""
        return self.catalog.models_in(self.region)

    def audio_max_bytes(self, model: str) -> int:
        """The largest driving audio file worth downloading for `model` (any model's limit when unknown)."""
        spec = self.catalog.models.get(model or self.catalog.default_model)
        if spec is not None and spec.inputs.audio is not None:
            return spec.inputs.audio.max_bytes
        return max((m.inputs.audio.max_bytes for m in self.models() if m.inputs.audio is not None), default=0)

    def effect_model(self) -> str:
        """The default model for /kf2v-effect: the first one in this region that has templates."""
        for spec in self.models():
            if spec.templates:
                return spec.key
        return self.catalog.default_model

    def queue_positions(self) -> dict[int, int]:
        """Job id -> its place in the fair queue."""
        return self.worker.scheduler.queue.positions()

    def slots_in_flight(self) -> dict[tuple[str, str], int]:
        """(account, model) -> provider tasks in flight."""
        return self.worker.scheduler.limits.in_flight()

    async def budget_report(self, guild_id: int, user_id: int = 0) -> BudgetReport:
        """What /kf2v-quota shows for the guild in the current day and month (and `user_id`'s own use)."""
        return await self.budget.report(guild_id, user_id)

    async def set_budgets(self, guild_id: int, *, daily: int | None, monthly: int | None) -> None:
        """The owners' budget edit (None leaves a value as it is)."""
        await self.budget.set_budgets(guild_id, daily=daily, monthly=monthly)

    async def set_member_limits(
        self,
        guild_id: int,
        *,
        member_daily_videos: int | None = None,
        user_queue_limit: int | None = None,
        edit_channels: ChannelEdit | None = None,
    ) -> None:
        """A manager's member limits and channel allow-list edit (inside the guild's budget)."""
        await self.budget.set_member_limits(
            guild_id,
            member_daily_videos=member_daily_videos,
            user_queue_limit=user_queue_limit,
            edit_channels=edit_channels,
        )

    # --- content rules (guild_id DEFAULT_SCOPE: the owners' list for every guild) --------------------------
    async def content_rules(self, guild_id: int) -> list[ContentRule]:
        """One list: a guild's own rules, or (DEFAULT_SCOPE) the owners' default rules."""
        return await self.store.content_rules(guild_id)

    async def add_content_rule(
        self, guild_id: int, phrase: str, user_id: int
    ) -> tuple[RuleChange, ContentRule, int, int]:
        """(what happened, the rule as listed, rules in that list now, the list's limit)."""
        try:
            key = phrase_key(phrase)
        except InvalidRule as invalid:
            raise InvalidInput(f"rules.{invalid.reason}", limit=invalid.limit) from None
        change, rule, count = await self.store.add_content_rule(
            guild_id, key, phrase.strip(), user_id, limit=MAX_RULES_PER_SCOPE
        )
        self._rules.invalidate(guild_id)
        return change, rule, count, MAX_RULES_PER_SCOPE

    async def remove_content_rule(self, guild_id: int, phrase: str) -> ContentRule | None:
        """Remove the rule `phrase` stands for (any case or width); None when the list has no such rule."""
        try:
            key = phrase_key(phrase)
        except InvalidRule:
            return None
        removed = await self.store.remove_content_rule(guild_id, key)
        self._rules.invalidate(guild_id)
        return removed

    async def rules_summary(self, guild_id: int) -> RulesSummary:
        """How many content rules apply to the guild, and how many prompts they refused this month."""
        own, default, refusals = await self.store.rules_summary(guild_id, self.budget.periods().month)
        return RulesSummary(own=own, default=default, refusals_this_month=refusals)


@dataclass(frozen=True, slots=True)
class RulesSummary:
    """Counts for /kf2v-rules: the guild's rules, the owners' defaults, refusals this month."""

    own: int  # the guild's own rules
    default: int  # the owners' rules for every guild
    refusals_this_month: int


__all__ = ["Actor", "Draft", "ImageWorkers", "JobService", "RulesSummary", "UserRateLimiter", "visible_text"]
