"""Jobs and their state machine: the one place that says which state may follow which."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class JobState(StrEnum):
    """A job's life cycle; `TRANSITIONS` lists the legal moves."""

    QUEUED = "queued"  # accepted, budget reserved, waiting for a provider slot
    SUBMITTING = "submitting"  # written before the POST: a crash here is reconciled, never resubmitted blindly
    PENDING = "pending"  # the provider has the task (task_id saved) and has not started it
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # the provider produced (and billed) the video; not yet posted
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        """True for states no job leaves (delivered, failed, canceled)."""
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.DELIVERED, JobState.FAILED, JobState.CANCELED})
SLOT_STATES = frozenset({JobState.SUBMITTING, JobState.PENDING, JobState.RUNNING})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.SUBMITTING, JobState.CANCELED, JobState.FAILED}),
    # back to QUEUED: throttled, provider trouble before a task existed, or a lost create that reconciliation
    # proved never reached the provider.
    JobState.SUBMITTING: frozenset({JobState.PENDING, JobState.QUEUED, JobState.FAILED}),
    # back to QUEUED from PENDING/RUNNING: the task FAILED with a temporary provider code and the job is sent
    # once more on the same reservation.
    JobState.PENDING: frozenset(
        {JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED, JobState.QUEUED}
    ),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED, JobState.QUEUED}),
    # FAILED from SUCCEEDED: the video was made (and billed) but can never be delivered.
    JobState.SUCCEEDED: frozenset({JobState.DELIVERED, JobState.FAILED}),
    JobState.DELIVERED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A bug: code tried to move a job along an edge the state machine does not have."""


def check_transition(job_id: int, current: JobState, new: JobState) -> None:
    """Raise `IllegalTransition` unless `current -> new` is in `TRANSITIONS`."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"job {job_id}: {current} -> {new} is not a legal transition")


class ChargeState(StrEnum):
    """A job's money: reserved on admission, then settled at the billed cost or released."""

    RESERVED = "reserved"
    SETTLED = "settled"
    RELEASED = "released"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRequest:
    """The options a member chose for one video: the one place a request option is declared.

    The command fills it, the store keeps it in columns named as these fields, the checks, the scheduler,
    Regenerate (`replace(job.request, seed=...)`) and the provider request read it. An empty `model` or
    `resolution` means "the default"; JobService fills both in before admission, so a stored job names them.
    """

    model: str = ""
    resolution: str = ""
    prompt: str = ""  # empty for an effect, which the template describes
    negative_prompt: str | None = None
    prompt_extend: bool = True
    seed: int | None = None  # None: the provider picks one
    template: str | None = None  # an effect template (kf2v-effect); None for a keyframe video
    # The media family (issue 12). JobService fills in `duration` and `sound` before admission (the model's
    # defaults when not asked), so a stored job names them; NULL in older rows = a 5-second silent kf2v video.
    duration: int | None = None  # seconds of output; for a continued clip, the whole video
    sound: bool | None = None  # whether the video has a soundtrack
    audio: str | None = None  # driving audio: a stored media reference (sha256 + extension)
    first_clip: str | None = None  # the video this one continues (Extend): a stored media reference


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    """A job about to be admitted: who asked where, their request, and its checked, stored frames."""

    guild_id: int
    channel_id: int
    user_id: int
    locale: str
    request: JobRequest
    first_frame: str  # media reference (sha256 + extension)
    last_frame: str | None
    parent_job_id: int | None = None  # the job Regenerate started from
    story_id: int | None = None  # a story's segment job (bot.jobs.story): its story ...
    segment_index: int | None = None  # ... and 0-based segment (frame k -> frame k+1)


@dataclass(frozen=True, slots=True)
class Job:
    """A stored job: its request, where it stands, what it cost, and where it is shown."""

    id: int
    guild_id: int
    channel_id: int
    user_id: int
    locale: str
    request: JobRequest
    first_frame: str
    last_frame: str | None
    parent_job_id: int | None
    state: JobState
    queue_seq: int  # FIFO order key; kept when a throttled job goes back to the queue
    account: str | None
    task_id: str | None
    request_id: str | None
    attempts: int
    delivery_attempts: int
    error_code: str | None
    error_key: str | None  # message key for the user (bot.i18n)
    error_detail: str | None
    cost_reserved: int  # milli-CNY
    cost_settled: int
    charge_state: ChargeState
    period_day: str  # budget day (YYYY-MM-DD in the configured zone) the reservation counts against
    period_month: str
    actual_prompt: str | None
    video_path: str | None
    video_url_expires_at: datetime | None
    status_message_id: int | None
    thread_id: int | None
    cancel_requested: bool
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    delivered_at: datetime | None
    updated_at: datetime
    story_id: int | None = None  # set on a story's segment jobs: they are joined, not posted one by one
    segment_index: int | None = None
    # When its prompts, media and requester were erased (KF2V_RETENTION_DAYS or /kf2v-forget-me); None: kept.
    anonymised_at: datetime | None = None
    deleted_by: int | None = None  # who took the delivered video down (Delete, issue 19), and when
    deleted_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        """True once the job's state is final."""
        return self.state.is_final


class PauseScope(StrEnum):
    """What a pause holds: every submission, one provider account's, or one guild's."""

    ALL = "all"
    ACCOUNT = "account"
    GUILD = "guild"


@dataclass(frozen=True, slots=True)
class Pause:
    """Submissions held by the owners (or, for an account, by a provider problem); jobs keep their place."""

    scope: PauseScope
    target: str  # "" for ALL, the account id, or the guild id as text
    reason: str
    since: datetime


@dataclass(frozen=True, slots=True)
class GuildPolicy:
    """A guild's money and member limits; None means "the default from settings"."""

    guild_id: int
    daily_budget: int | None = None  # milli-CNY
    monthly_budget: int | None = None
    member_daily_videos: int | None = None
    user_queue_limit: int | None = None
    allowed_channels: tuple[int, ...] = ()  # empty = every channel
    paused: bool = False


@dataclass(frozen=True, slots=True)
class GuildUsage:
    """Money counted against a guild's day and month, split into settled (spent) and reserved."""

    spent_day: int
    reserved_day: int
    spent_month: int
    reserved_month: int
    member_videos_today: int
    member_active_jobs: int

    @property
    def used_day(self) -> int:
        """Spent plus reserved today (milli-CNY)."""
        return self.spent_day + self.reserved_day

    @property
    def used_month(self) -> int:
        """Spent plus reserved this month (milli-CNY)."""
        return self.spent_month + self.reserved_month


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One money movement of a job (milli-CNY): reserve, settle or release; append-only."""

    id: int
    job_id: int
    guild_id: int
    kind: str  # reserve | settle | release
    amount: int
    at: datetime
