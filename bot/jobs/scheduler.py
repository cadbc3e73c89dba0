"""Who goes next, and whether the account may take it now.

`FairQueue` takes turns across guilds, then across users inside a guild, first-in-first-out per user.
`AccountLimits` keeps each DashScope account within its limits per model: tasks in flight (a create whose
answer is outstanding or lost counts as one: its task may exist) and submissions in any one-second window,
plus cool-downs after a 429 and a pause after an account problem. Several creates of an account may be
outstanding at once: a lost answer is matched by api_key_id and echoed prompt, not by being the only one.
`Scheduler` combines both; it is pure bookkeeping (no I/O), driven by the worker with a clock.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from statistics import fmean

from bot.jobs.models import Job, JobRequest, Pause, PauseScope
from bot.run_times import RunTimePrior, RunTimePriors

# Keep a little room under the provider's one-second window: our clock and theirs do not tick together.
RATE_WINDOW_S = 1.1
COOLDOWN_BASE_S = 2.0
COOLDOWN_MAX_S = 60.0


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """The scheduler's view of a queued job: whose turn it is, and the request that says which lane."""

    job_id: int
    guild_id: int
    user_id: int
    queue_seq: int
    request: JobRequest

    @classmethod
    def of(cls, job: Job) -> QueuedJob:
        """The queue entry for a stored job."""
        return cls(job.id, job.guild_id, job.user_id, job.queue_seq, job.request)

    @property
    def model(self) -> str:
        """The catalog model key, which picks the lane."""
        return self.request.model

    @property
    def resolution(self) -> str:
        """The requested resolution, which picks the duration estimate."""
        return self.request.resolution


class FairQueue:
    """Round robin over guilds, then users; FIFO (by queue_seq) per user."""

    def __init__(self) -> None:
        # guild -> (user -> that user's jobs in queue_seq order); dict order is the turn order.
        self._guilds: OrderedDict[int, OrderedDict[int, deque[QueuedJob]]] = OrderedDict()
        self._by_id: dict[int, QueuedJob] = {}
        self._models: dict[str, int] = {}
        # guild -> model -> how many of its users have a job of that model next: `pop_next` passes over a
        # guild whose users all wait for a blocked model without looking at each user (10,000 queued jobs
        # in 1,000 guilds: ~0.3 ms instead of ~3 ms when one model's lane is full).
        self._heads: dict[int, dict[str, int]] = {}
        self.version = 0  # bumped on every change: watchers recompute positions only when it moved
        self._positions: tuple[int, dict[int, int]] = (-1, {})  # (version, positions) of the last computation

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._by_id

    def push(self, job: QueuedJob, *, front: bool = False) -> None:
        """Add a job; `front` gives its guild and user the next turn (a throttled job goes back first)."""
        if job.job_id in self._by_id:
            return
        users = self._guilds.get(job.guild_id)
        if users is None:
            users = self._guilds[job.guild_id] = OrderedDict()
        jobs = users.get(job.user_id)
        if jobs is None:
            jobs = users[job.user_id] = deque()
        head = jobs[0] if jobs else None
        if not jobs or jobs[-1].queue_seq < job.queue_seq:
            jobs.append(job)
        else:  # keep per-user FIFO by the original order, whatever order jobs come back in
            index = next(i for i, other in enumerate(jobs) if other.queue_seq > job.queue_seq)
            jobs.insert(index, job)
        if jobs[0] is not head:
            self._head_changed(job.guild_id, head, jobs[0])
        if front:
            users.move_to_end(job.user_id, last=False)
            self._guilds.move_to_end(job.guild_id, last=False)
        self._by_id[job.job_id] = job
        self._models[job.model] = self._models.get(job.model, 0) + 1
        self.version += 1

    def _forget(self, job: QueuedJob) -> None:
        del self._by_id[job.job_id]
        left = self._models[job.model] - 1
        if left:
            self._models[job.model] = left
        else:
            del self._models[job.model]
        self.version += 1

    def _head_changed(self, guild_id: int, old: QueuedJob | None, new: QueuedJob | None) -> None:
        counts = self._heads.setdefault(guild_id, {})
        if old is not None:
            left = counts[old.model] - 1
            if left:
                counts[old.model] = left
            else:
                del counts[old.model]
        if new is not None:
            counts[new.model] = counts.get(new.model, 0) + 1
        if not counts:
            del self._heads[guild_id]

    def models(self) -> set[str]:
        """Models with at least one queued job."""
        return set(self._models)

    def remove(self, job_id: int) -> QueuedJob | None:
        """Take the job out of the queue; None when it was not queued (no error)."""
        job = self._by_id.get(job_id)
        if job is None:
            return None
        self._forget(job)
        users = self._guilds[job.guild_id]
        jobs = users[job.user_id]
        head = jobs[0]
        jobs.remove(job)
        if head is job:
            self._head_changed(job.guild_id, job, jobs[0] if jobs else None)
        if not jobs:
            del users[job.user_id]
            if not users:
                del self._guilds[job.guild_id]
        return job

    def head_models(self, skip_guilds: Set[int]) -> set[str]:
        """Models of the jobs next in line, outside `skip_guilds` (what could be dispatched next)."""
        return {model for guild_id, counts in self._heads.items() if guild_id not in skip_guilds for model in counts}

    def pop_next(
        self, eligible_models: set[str] | None = None, skip_guilds: Set[int] = frozenset()
    ) -> QueuedJob | None:
        """The next job by turn whose model can be submitted now, outside `skip_guilds` (paused); its guild and
        user go to the back."""
        for guild_id, users in self._guilds.items():
            if guild_id in skip_guilds:
                continue
            if eligible_models is not None and self._heads[guild_id].keys().isdisjoint(eligible_models):
                continue
            for user_id, jobs in users.items():
                head = jobs[0]
                if eligible_models is not None and head.model not in eligible_models:
                    continue
                jobs.popleft()
                self._head_changed(guild_id, head, jobs[0] if jobs else None)
                self._forget(head)
                if jobs:
                    users.move_to_end(user_id)
                else:
                    del users[user_id]
                if users:
                    self._guilds.move_to_end(guild_id)
                else:
                    del self._guilds[guild_id]
                return head
        return None

    def order(self) -> Iterator[QueuedJob]:
        """The order in which jobs would be taken if every model had room (for positions and ETAs)."""
        rings = [(list(users.values()), [0] * len(users)) for users in self._guilds.values()]
        guild_turn = deque(range(len(rings)))
        user_turn = [deque(range(len(jobs))) for jobs, _ in rings]
        while guild_turn:
            g = guild_turn.popleft()
            jobs_per_user, taken = rings[g]
            u = user_turn[g].popleft()
            yield jobs_per_user[u][taken[u]]
            taken[u] += 1
            if taken[u] < len(jobs_per_user[u]):
                user_turn[g].append(u)
            if user_turn[g]:
                guild_turn.append(g)

    def positions(self) -> dict[int, int]:
        """Every queued job's place (1 = next). O(n), so kept until the queue changes: a status refresh
        asks once per job, and with 10,000 queued each computation takes about 20 ms. Do not modify it."""
        version, cached = self._positions
        if version != self.version:
            cached = {job.job_id: i + 1 for i, job in enumerate(self.order())}
            self._positions = (self.version, cached)
        return cached

    def guild_depths(self) -> dict[int, int]:
        """Queued jobs per guild."""
        return {g: sum(len(j) for j in users.values()) for g, users in self._guilds.items()}


@dataclass
class _Lane:
    """One account and model."""

    max_in_flight: int
    submit_rps: float
    in_flight: set[int] = field(default_factory=set)
    recent_submits: deque[float] = field(default_factory=deque)
    sending: dict[int, float] = field(default_factory=dict)  # job -> its entry in recent_submits, until answered
    cooldown_until: float = 0.0
    cooldown_level: int = 0


@dataclass
class _Account:
    name: str
    pause: Pause | None = None  # a provider problem (bad key, arrears) or the owners
    lanes: dict[str, _Lane] = field(default_factory=dict)


class AccountLimits:
    """The provider limits per account and model, enforced on our side so we never hit them."""

    def __init__(self, accounts: Iterable[str], limits: dict[str, tuple[int, float]]) -> None:
        """`limits`: model -> (max tasks in flight, submissions per second)."""
        self._limits = limits
        self._accounts = {name: _Account(name) for name in accounts}
        if not self._accounts:
            raise ValueError("at least one provider account is needed")

    @property
    def accounts(self) -> list[str]:
        """The configured account fingerprints, paused ones included."""
        return list(self._accounts)

    def serves(self, model: str) -> bool:
        """Whether `model` has limits here (it is in the catalog for this region); others are never dispatched."""
        return model in self._limits

    def _lane(self, account: str, model: str) -> _Lane:
        acc = self._accounts[account]
        lane = acc.lanes.get(model)
        if lane is None:
            max_in_flight, rps = self._limits[model]
            lane = acc.lanes[model] = _Lane(max_in_flight, rps)
        return lane

    def _prune(self, lane: _Lane, now: float) -> None:
        while lane.recent_submits and now - lane.recent_submits[0] >= RATE_WINDOW_S:
            lane.recent_submits.popleft()

    def ready_at(self, account: str, model: str, now: float) -> float | None:
        """When this lane could take a submission: `now` if it can now, None if only a slot freeing helps."""
        acc = self._accounts[account]
        if acc.pause is not None:
            return None
        lane = self._lane(account, model)
        if len(lane.in_flight) >= lane.max_in_flight:
            return None
        self._prune(lane, now)
        at = max(now, lane.cooldown_until)
        burst = max(1, math.floor(lane.submit_rps))
        if len(lane.recent_submits) >= burst:
            at = max(at, lane.recent_submits[-burst] + RATE_WINDOW_S)
        return at

    def choose(self, model: str, now: float) -> str | None:
        """The account that can submit `model` now with the fewest tasks in flight."""
        best: tuple[int, str] | None = None
        for name in self._accounts:
            at = self.ready_at(name, model, now)
            if at is not None and at <= now:
                load = len(self._lane(name, model).in_flight)
                if best is None or load < best[0]:
                    best = (load, name)
        return best[1] if best else None

    def next_ready(self, models: Iterable[str], now: float) -> float | None:
        """The earliest time any account can submit any of `models`; None while all wait for a slot or are paused."""
        times = [
            at for model in models for name in self._accounts if (at := self.ready_at(name, model, now)) is not None
        ]
        return min(times) if times else None

    # --- events --------------------------------------------------------------------------------------
    def begin_submit(self, account: str, model: str, job_id: int, now: float) -> None:
        """A job was picked for this lane: it holds a slot and counts in the rate window from now."""
        lane = self._lane(account, model)
        lane.in_flight.add(job_id)
        lane.recent_submits.append(now)
        lane.sending[job_id] = now

    def mark_sent(self, account: str, model: str, job_id: int, now: float) -> None:
        """The job's create leaves only now (after a database write and building a body of megabytes):
        count it in the rate window from this moment, since the provider counts arrivals."""
        if account not in self._accounts:
            return
        lane = self._lane(account, model)
        picked = lane.sending.get(job_id)
        if picked is None or now <= picked:
            return
        with contextlib.suppress(ValueError):  # pruned already: the window has moved past it
            lane.recent_submits.remove(picked)
        lane.recent_submits = deque(sorted([*lane.recent_submits, now]))
        lane.sending[job_id] = now

    def end_submit(self, account: str, job_id: int) -> None:
        """The job's create was answered (or its answer given up on): nothing left to move in the window."""
        acc = self._accounts.get(account)
        if acc is not None:
            for lane in acc.lanes.values():
                lane.sending.pop(job_id, None)

    def outstanding_creates(self, account: str, model: str) -> set[int]:
        """Jobs of this lane whose create has been picked or sent and not answered yet."""
        acc = self._accounts.get(account)
        lane = acc.lanes.get(model) if acc is not None else None
        return set(lane.sending) if lane is not None else set()

    def occupy(self, account: str, model: str, job_id: int) -> None:
        """A task already at the provider (found at start-up) holds a slot."""
        if account not in self._accounts:
            self._accounts[account] = _Account(account)
        self._lane(account, model).in_flight.add(job_id)

    def remember_submit(self, account: str, model: str, at: float) -> None:
        """A submission made before a restart still counts in the rate window (of a model still offered)."""
        if account in self._accounts and self.serves(model):
            lane = self._lane(account, model)
            lane.recent_submits.append(at)
            lane.recent_submits = deque(sorted(lane.recent_submits))

    def release(self, account: str, model: str, job_id: int) -> None:
        """The job's task ended (or never started): free its slot; unknown accounts are ignored."""
        if account in self._accounts:
            self._lane(account, model).in_flight.discard(job_id)
            self.end_submit(account, job_id)

    def holds(self, job_id: int) -> bool:
        """Whether the job holds a slot or a create in the air on any account."""
        return any(
            job_id in lane.in_flight or job_id in lane.sending
            for acc in self._accounts.values()
            for lane in acc.lanes.values()
        )

    def forget(self, job_id: int) -> None:
        """Free whatever slot the job holds, on any account (a job whose work crashed goes back to the queue)."""
        for acc in self._accounts.values():
            for lane in acc.lanes.values():
                lane.in_flight.discard(job_id)
                lane.sending.pop(job_id, None)

    def throttled(self, account: str, model: str, now: float) -> float:
        """A 429: cool this lane down, longer each time in a row. Returns the cool-down in seconds."""
        lane = self._lane(account, model)
        delay: float = min(COOLDOWN_MAX_S, COOLDOWN_BASE_S * 2.0**lane.cooldown_level)
        lane.cooldown_level += 1
        lane.cooldown_until = now + delay
        return delay

    def succeeded(self, account: str, model: str) -> None:
        """A create went through: the lane's next 429 cools down from the shortest delay again."""
        self._lane(account, model).cooldown_level = 0

    def pause(self, account: str, reason: str, *, since: datetime | None = None) -> None:
        """Hold the account's submissions (its tasks in flight are still polled)."""
        self._accounts[account].pause = Pause(PauseScope.ACCOUNT, account, reason, since or datetime.now(UTC))

    def resume(self, account: str) -> None:
        """Lift the account's pause; unknown accounts are ignored."""
        if account in self._accounts:
            self._accounts[account].pause = None

    def paused(self) -> dict[str, str]:
        """Paused accounts and why."""
        return {n: a.pause.reason for n, a in self._accounts.items() if a.pause is not None}

    def pauses(self) -> list[Pause]:
        """The accounts' pauses."""
        return [a.pause for a in self._accounts.values() if a.pause is not None]

    def in_flight(self) -> dict[tuple[str, str], int]:
        """Tasks in flight per (account, model)."""
        return {(n, m): len(lane.in_flight) for n, a in self._accounts.items() for m, lane in a.lanes.items()}

    def capacity(self, model: str) -> int:
        """Tasks `model` may have in flight across the unpaused accounts (at least 1, for estimates)."""
        return sum(self._lane(n, model).max_in_flight for n, a in self._accounts.items() if a.pause is None) or 1


# Until a tier has this many finished tasks, its window also covers its prior range (`RUN_TIME_PRIORS`): a few
# samples bunched together would otherwise make a narrow window that later tasks fall outside (found late).
TRUST_SAMPLES = 8


@dataclass
class DurationModel:
    """What a tier takes at the provider, learned from recent jobs (seconds), starting from its prior."""

    queued: list[float] = field(default_factory=list)
    running: list[float] = field(default_factory=list)
    prior_queued: float = 60.0
    prior_running: float = 300.0
    keep: int = 50
    # The prior's range of running seconds (bot/run_times.py); None: 0.5-1.5 x prior_running.
    prior_running_range: tuple[float, float] | None = None

    @classmethod
    def from_prior(cls, prior: RunTimePrior) -> DurationModel:
        """A tier not seen yet: its expected times are the prior's."""
        low, high = prior.running_s
        return cls(prior_queued=prior.queued_mean_s, prior_running=(low + high) / 2, prior_running_range=(low, high))

    def observe(self, queued: float, running: float) -> None:
        """Add a finished job's seconds (negatives count as 0), keeping the latest `keep`."""
        self.queued = [*self.queued, max(0.0, queued)][-self.keep :]
        self.running = [*self.running, max(0.0, running)][-self.keep :]

    @property
    def mean_queued(self) -> float:
        """Mean seconds PENDING at the provider; the prior until a job is seen."""
        return fmean(self.queued) if self.queued else self.prior_queued

    @property
    def mean_running(self) -> float:
        """Mean seconds RUNNING at the provider; the prior until a job is seen."""
        return fmean(self.running) if self.running else self.prior_running

    def running_bounds(self) -> tuple[float, float]:
        """A range the running time very likely falls in (see `_bounds`). With a prior range: that range
        widened to every sample until `TRUST_SAMPLES` are seen, then the samples alone. Without one: 0.5-1.5 x
        the mean until 3 are seen."""
        if self.prior_running_range is not None and len(self.running) < TRUST_SAMPLES:
            low, high = self.prior_running_range
            if len(self.running) >= 2:
                seen_low, seen_high = _bounds(self.running)
                return (min(low, seen_low), max(high, seen_high))
            return (min([low, *self.running]), max([high, *self.running]))
        if len(self.running) < 3:
            mean = self.mean_running
            return (0.5 * mean, 1.5 * mean)
        return _bounds(self.running)


def _bounds(samples: list[float]) -> tuple[float, float]:
    """The smallest and largest sample, each pushed out by the mean gap between neighbouring samples.

    For n draws from a range with hard ends (the provider's run times are about 300 s +- 20 %) the extremes
    sit on average (max - min) / (n - 1) inside the true ends, so this is where the ends are expected: the
    window tightens as samples accumulate (a pad of half the standard deviation, as before, stayed about 17 s
    wide on each side however much was seen, and every second of it costs polls on every job). A value
    outside still gets found: early, at the first poll of the window; late, by the gentle back-off.
    """
    low, high = min(samples), max(samples)
    pad = (high - low) / (len(samples) - 1)
    return (max(0.0, low - pad), high + pad)


class Scheduler:
    """The fair queue plus the account limits: hands the worker (job, account) pairs when allowed."""

    def __init__(self, limits: AccountLimits, priors: RunTimePriors | None = None) -> None:
        self.queue = FairQueue()
        self.limits = limits
        self._paused_all: Pause | None = None  # the owners paused every submission
        self._paused_guilds: dict[int, Pause] = {}  # guild -> its pause; other guilds' jobs go on
        self.priors = priors or RunTimePriors()
        self.durations: dict[tuple[str, str, int | None], DurationModel] = {}

    def durations_for(self, model: str, resolution: str, duration: int | None = None) -> DurationModel:
        """The tier's duration model, created from its prior (bot/run_times.py) on first use."""
        key = (model, resolution, duration)
        model_stats = self.durations.get(key)
        if model_stats is None:
            model_stats = self.durations[key] = DurationModel.from_prior(self.priors.lookup(*key))
        return model_stats

    # --- pauses ---------------------------------------------------------------------------------------
    def pause(self, pause: Pause) -> None:
        """Hold submissions in the pause's scope (queued jobs keep their place)."""
        if pause.scope is PauseScope.ALL:
            self._paused_all = pause
        elif pause.scope is PauseScope.GUILD:
            self._paused_guilds[int(pause.target)] = pause
        else:
            self.limits.pause(pause.target, pause.reason, since=pause.since)

    def resume(self, scope: PauseScope, target: str = "") -> None:
        """Lift the pause of that scope and target, if any."""
        if scope is PauseScope.ALL:
            self._paused_all = None
        elif scope is PauseScope.GUILD:
            self._paused_guilds.pop(int(target), None)
        else:
            self.limits.resume(target)

    def pauses(self) -> list[Pause]:
        """Every pause in force: all, then accounts, then guilds."""
        everything = [self._paused_all] if self._paused_all is not None else []
        return [*everything, *self.limits.pauses(), *self._paused_guilds.values()]

    def pause_for(self, guild_id: int) -> Pause | None:
        """What holds this guild's jobs: the pause of everything, else every account paused, else its own."""
        if self._paused_all is not None:
            return self._paused_all
        accounts = self.limits.pauses()
        if accounts and len(accounts) == len(self.limits.accounts):
            return accounts[0]
        return self._paused_guilds.get(guild_id)

    def next_dispatch(self, now: float) -> tuple[QueuedJob, str] | None:
        """The next (job, account) to submit now, or None."""
        if self._paused_all is not None or not len(self.queue):
            return None
        eligible = {m for m in self._dispatchable_models() if self.limits.choose(m, now) is not None}
        if not eligible:
            return None
        job = self.queue.pop_next(eligible, self._paused_guilds.keys())
        if job is None:
            return None
        account = self.limits.choose(job.model, now)
        assert account is not None
        return job, account

    def wake_at(self, now: float) -> float | None:
        """When a currently blocked queue could move without any other event (rate window, cool-down)."""
        if self._paused_all is not None or not len(self.queue):
            return None
        return self.limits.next_ready(self._dispatchable_models(), now)

    def _dispatchable_models(self) -> set[str]:
        # A model without limits (it left the catalog while its jobs were queued) is never picked: the worker
        # fails those jobs; the dispatcher must not stop on them.
        models = self.queue.models() if not self._paused_guilds else self.queue.head_models(self._paused_guilds.keys())
        return {model for model in models if self.limits.serves(model)}

    def eta(self, position: int, model: str, resolution: str, duration: int | None = None) -> float:
        """Seconds until a queued job at `position` is expected to be done (a rough, honest estimate)."""
        stats = self.durations_for(model, resolution, duration)
        per_task = stats.mean_queued + stats.mean_running
        rounds = math.ceil(position / self.limits.capacity(model))
        return float(rounds * per_task)
