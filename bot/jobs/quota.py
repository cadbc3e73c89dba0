"""Budgets: what a guild may spend, what a job costs, and the admission decision.

Money is integer milli-CNY. A job reserves its estimated cost when accepted; on success the actual cost
(billed seconds x the tier's price) is settled; failures, cancellations and content rejections release
the reservation (the provider bills only successful seconds). The decision runs inside the store's
transaction, so simultaneous requests can never over-commit a budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.catalog import VIDEO_SECONDS, Catalog, format_cny
from bot.errors import QueueFull, QuotaExceeded
from bot.jobs.db import Transaction
from bot.jobs.models import GuildPolicy, GuildUsage, Job, NewJob
from bot.jobs.store import ChannelEdit, JobStore, utcnow


@dataclass(frozen=True, slots=True)
class Defaults:
    """The limits a guild has until the owners or its managers set its own (from settings)."""

    daily_budget: int
    monthly_budget: int
    member_daily_videos: int
    user_queue_limit: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a finished job is charged and why (the provider's billed seconds, clamped if impossible)."""

    cost: int  # milli-CNY, at most the job's reservation
    billed_seconds: float | None  # as the provider sent it
    clamped: bool  # the bill was impossible and was replaced by the catalog's fixed duration


@dataclass(frozen=True, slots=True)
class Periods:
    """The budget day and month in the bot's time zone, and when each resets."""

    day: str
    month: str
    day_resets_at: datetime
    month_resets_at: datetime


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """A guild's limits with the defaults filled in."""

    daily_budget: int
    monthly_budget: int
    member_daily_videos: int
    user_queue_limit: int
    allowed_channels: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BudgetReport:
    """Everything /kf2v-quota shows."""

    guild_id: int
    policy: EffectivePolicy
    usage: GuildUsage
    periods: Periods
    top_users: list[tuple[int, int, int]]

    @property
    def left_day(self) -> int:
        """What the guild may still reserve today (milli-CNY), never below 0."""
        return max(0, self.policy.daily_budget - self.usage.used_day)

    @property
    def left_month(self) -> int:
        """What the guild may still reserve this month (milli-CNY), never below 0."""
        return max(0, self.policy.monthly_budget - self.usage.used_month)


class BudgetService:
    """Reserves, settles and releases job costs against guild budgets and member limits.

    Every price is the one of `region`, the region the bot's jobs are sent to (a process sends to one region:
    its keys and base URL belong to it), so a guild is budgeted at what the account is really billed.
    """

    def __init__(self, store: JobStore, catalog: Catalog, defaults: Defaults, tz: ZoneInfo, *, region: str) -> None:
        if region not in catalog.region_base_urls:
            raise ValueError(f"unknown region {region!r}")
        self._store = store
        self._catalog = catalog
        self._defaults = defaults
        self._tz = tz
        self.region = region

    # --- prices and periods --------------------------------------------------------------------------
    def estimate(self, model: str, resolution: str, seconds: int | None = None) -> int:
        """Price x duration (None: the model's default duration) in the bot's region, reserved at admission."""
        spec = self._catalog.model(model)
        return spec.cost_milli(resolution, spec.default_duration if seconds is None else seconds, region=self.region)

    def seconds_of(self, job: Job) -> int:
        """The length the job's reservation was made for (older rows without one: the model's default)."""
        if job.request.duration is not None:
            return job.request.duration
        spec = self._catalog.models.get(job.request.model)
        return spec.default_duration if spec is not None else VIDEO_SECONDS

    def settlement(self, job: Job, billed_seconds: float | None) -> Settlement:
        """What to charge for a finished job: the billed seconds, never more than the job's duration.

        The bill is the provider's word, i.e. untrusted input: more than the video can last, negative or not
        a finite number is clamped to the job's duration (what the reservation was made for) and flagged so
        the caller can log, count and report it. Without `usage` the job's duration is charged.
        """
        fixed = self.seconds_of(job)
        if billed_seconds is None:
            seconds, clamped = float(fixed), False
        elif not math.isfinite(billed_seconds) or billed_seconds < 0 or billed_seconds > fixed:
            seconds, clamped = float(fixed), True
        else:
            seconds, clamped = billed_seconds, False
        cost = self._catalog.model(job.request.model).cost_milli(job.request.resolution, seconds, region=self.region)
        return Settlement(cost=min(cost, job.cost_reserved), billed_seconds=billed_seconds, clamped=clamped)

    def actual_cost(self, job: Job, billed_seconds: float | None) -> int:
        """The milli-CNY to settle: the billed seconds' cost (clamped as in `settlement`), at most the reserve."""
        return self.settlement(job, billed_seconds).cost

    def periods(self, now: datetime | None = None) -> Periods:
        """The budget day and month containing `now` (default: now) in the configured time zone."""
        local = (now or utcnow()).astimezone(self._tz)
        day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        next_day = (day_start + timedelta(days=1, hours=2)).replace(hour=0)  # DST-safe
        month_start = day_start.replace(day=1)
        next_month = (month_start + timedelta(days=32)).replace(day=1)
        return Periods(
            day=day_start.strftime("%Y-%m-%d"),
            month=month_start.strftime("%Y-%m"),
            day_resets_at=next_day,
            month_resets_at=next_month,
        )

    def effective(self, policy: GuildPolicy) -> EffectivePolicy:
        """The guild's policy with the configured defaults filled in where it has no value of its own."""
        d = self._defaults
        return EffectivePolicy(
            daily_budget=d.daily_budget if policy.daily_budget is None else policy.daily_budget,
            monthly_budget=d.monthly_budget if policy.monthly_budget is None else policy.monthly_budget,
            member_daily_videos=(
                d.member_daily_videos if policy.member_daily_videos is None else policy.member_daily_videos
            ),
            user_queue_limit=d.user_queue_limit if policy.user_queue_limit is None else policy.user_queue_limit,
            allowed_channels=policy.allowed_channels,
        )

    # --- admission -----------------------------------------------------------------------------------
    def refuse_if_over(self, usage: GuildUsage, policy: GuildPolicy, cost: int, periods: Periods) -> None:
        """Raise the refusal that says what is left and when, if this job doesn't fit the guild's limits."""
        limits = self.effective(policy)
        if usage.member_active_jobs >= limits.user_queue_limit:
            raise QueueFull(count=usage.member_active_jobs, limit=limits.user_queue_limit)
        if usage.member_videos_today >= limits.member_daily_videos:
            raise QuotaExceeded(
                "quota.member_daily",
                limit=limits.member_daily_videos,
                resets_ts=int(periods.day_resets_at.timestamp()),
            )
        budgets = (
            ("quota.daily", usage.used_day, limits.daily_budget, periods.day_resets_at),
            ("quota.monthly", usage.used_month, limits.monthly_budget, periods.month_resets_at),
        )
        for key, used, budget, resets_at in budgets:
            if used + cost > budget:
                raise QuotaExceeded(
                    key,
                    cost=format_cny(cost),
                    left=format_cny(max(0, budget - used)),
                    budget=format_cny(budget),
                    resets_ts=int(resets_at.timestamp()),
                )

    async def precheck(
        self,
        guild_id: int,
        user_id: int,
        model: str,
        resolution: str,
        now: datetime | None = None,
        *,
        seconds: int | None = None,
    ) -> None:
        """The admission decision on a read-only snapshot, to refuse before any costly work (downloads,
        image decoding). Passing it reserves nothing: `admit` decides again, atomically."""
        periods = self.periods(now)
        policy, usage = await self._store.policy_and_usage(guild_id, user_id, periods.day, periods.month)
        self.refuse_if_over(usage, policy, self.estimate(model, resolution, seconds), periods)

    async def admit(self, new_job: NewJob, now: datetime | None = None) -> Job:
        """Reserve the job's cost and create it, or raise a refusal that says what is left and when."""
        cost = self.estimate(new_job.request.model, new_job.request.resolution, new_job.request.duration)
        periods = self.periods(now)

        def decide(usage: GuildUsage, policy: GuildPolicy) -> None:
            self.refuse_if_over(usage, policy, cost, periods)

        return await self._store.create_job(
            new_job, cost=cost, period_day=periods.day, period_month=periods.month, admit=decide, now=now
        )

    async def admit_batch(self, new_jobs: Sequence[NewJob], now: datetime | None = None) -> list[Job]:
        """Variations (issue 19): several jobs of one member and request, reserved whole in one transaction or
        refused whole. The batch's total cost is held against the budgets, and every job of it against the
        member's daily videos and queue."""
        first = new_jobs[0]
        count = len(new_jobs)
        cost = self.estimate(first.request.model, first.request.resolution, first.request.duration)
        periods = self.periods(now)

        def decide(usage: GuildUsage, policy: GuildPolicy) -> None:
            self.refuse_if_over(usage, policy, cost * count, periods)
            limits = self.effective(policy)
            if usage.member_active_jobs + count > limits.user_queue_limit:
                raise QueueFull(
                    "quota.batch_queue",
                    count=count,
                    total=usage.member_active_jobs + count,
                    limit=limits.user_queue_limit,
                )
            if usage.member_videos_today + count > limits.member_daily_videos:
                raise QuotaExceeded(
                    "quota.batch_member_daily",
                    count=count,
                    left=max(0, limits.member_daily_videos - usage.member_videos_today),
                    limit=limits.member_daily_videos,
                    resets_ts=int(periods.day_resets_at.timestamp()),
                )

        async def batch(_: Transaction) -> Sequence[NewJob]:
            return new_jobs

        return await self._store.create_jobs(
            first.guild_id, first.user_id, cost=cost, period_day=periods.day, period_month=periods.month,
            admit=decide, prepare=batch, now=now,
        )  # fmt: skip

    # --- reports and settings ------------------------------------------------------------------------
    async def report(self, guild_id: int, user_id: int = 0, now: datetime | None = None) -> BudgetReport:
        """Everything /kf2v-quota shows for the guild (and `user_id`'s own use) in the current periods."""
        periods = self.periods(now)
        policy = await self._store.get_policy(guild_id)
        usage = await self._store.guild_usage(guild_id, user_id, periods.day, periods.month)
        top = await self._store.top_spenders(guild_id, periods.month)
        return BudgetReport(guild_id, self.effective(policy), usage, periods, top)

    async def policy(self, guild_id: int) -> EffectivePolicy:
        """The guild's effective policy (its own values over the defaults)."""
        return self.effective(await self._store.get_policy(guild_id))

    async def set_budgets(self, guild_id: int, *, daily: int | None, monthly: int | None) -> EffectivePolicy:
        """Owners only (checked by the caller). None keeps the current value; only the given columns change."""
        columns = {"daily_budget": daily, "monthly_budget": monthly}
        given = {k: v for k, v in columns.items() if v is not None}
        return self.effective(await self._store.update_policy(guild_id, edit_channels=None, **given))

    async def set_member_limits(
        self,
        guild_id: int,
        *,
        member_daily_videos: int | None = None,
        user_queue_limit: int | None = None,
        allowed_channels: tuple[int, ...] | None = None,
        edit_channels: ChannelEdit | None = None,
    ) -> EffectivePolicy:
        """Guild managers: limits on members inside the budget the owners set (never the budget itself).

        `edit_channels` changes the allowed channels from what they are at that moment (see `update_policy`).
        """
        columns: dict[str, object] = {
            "member_daily_videos": member_daily_videos,
            "user_queue_limit": user_queue_limit,
            "allowed_channels": allowed_channels,
        }
        return self.effective(
            await self._store.update_policy(
                guild_id, edit_channels=edit_channels, **{k: v for k, v in columns.items() if v is not None}
            )
        )
