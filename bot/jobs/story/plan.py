"""A story's rules without I/O: prompts per segment, the story's state, what to do next.

Segment k (0-based) runs keyframe k -> keyframe k+1; a story of n keyframes has n-1 segments. A segment's
current job is its newest one (a retry or a redo is a new job for the same segment).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.jobs.models import JobState

PROMPT_SEPARATOR = "|"
MAX_SEED = 2_147_483_647
RETRIES_PER_SEGMENT = 1  # a failed segment runs once more with a new seed, then the user decides


class StoryState(StrEnum):
    """Where a story stands as a whole."""

    RUNNING = "running"  # segments queued or running, or the join is due
    AWAITING_CHOICE = "awaiting_choice"  # a segment failed twice: deliver as far as it got, or fail
    DELIVERED = "delivered"  # the joined video was posted (a redo makes it RUNNING again)
    PARTIAL = "partial"  # delivered as far as it got, at the user's choice
    FAILED = "failed"
    CANCELED = "canceled"


FINAL_STORY_STATES = frozenset({StoryState.DELIVERED, StoryState.PARTIAL, StoryState.FAILED, StoryState.CANCELED})


class PromptCountMismatch(ValueError):
    """`|`-separated prompts whose count is not the number of segments (both numbers kept)."""

    def __init__(self, prompts: int, segments: int) -> None:
        super().__init__(f"{prompts} prompts for {segments} segments")
        self.prompts = prompts
        self.segments = segments


class EmptySegmentPrompt(ValueError):
    """A `|`-separated prompt list with an empty entry (0-based `segment`)."""

    def __init__(self, segment: int) -> None:
        super().__init__(f"segment {segment + 1} has an empty prompt")
        self.segment = segment


def split_prompts(prompt: str, segments: int) -> list[str]:
    """One prompt per segment: the same one for all, or `|`-separated, exactly one per segment."""
    if PROMPT_SEPARATOR not in prompt:
        return [prompt.strip()] * segments
    parts = [part.strip() for part in prompt.split(PROMPT_SEPARATOR)]
    if len(parts) != segments:
        raise PromptCountMismatch(len(parts), segments)
    for index, part in enumerate(parts):
        if not part:
            raise EmptySegmentPrompt(index)
    return parts


def new_seed(previous: int | None) -> int:
    """A seed for a retried or redone segment, never the one that just ran."""
    while True:
        seed = secrets.randbelow(MAX_SEED + 1)
        if seed != previous:
            return seed


class SegmentStatus(StrEnum):
    """One segment's state, from its jobs, for the status message and the decisions."""

    WAITING = "waiting"  # queued
    RUNNING = "running"  # being submitted, at the provider, or being downloaded
    READY = "ready"  # its video is on disk
    RETRYING = "retrying"  # failed once; its retry is waiting or running
    FAILED = "failed"  # failed after its retry
    CANCELED = "canceled"


@dataclass(frozen=True, slots=True)
class SegmentJob:
    """The facts about one job of a segment that the story needs."""

    job_id: int
    segment: int
    state: JobState
    has_video: bool


def segment_statuses(segments: int, jobs: Sequence[SegmentJob]) -> list[SegmentStatus]:
    """Each segment's status from all its jobs (oldest first per segment)."""
    by_segment: dict[int, list[SegmentJob]] = {k: [] for k in range(segments)}
    for job in sorted(jobs, key=lambda j: j.job_id):
        by_segment.setdefault(job.segment, []).append(job)
    statuses = []
    for k in range(segments):
        tries = by_segment[k]
        if not tries:
            statuses.append(SegmentStatus.WAITING)
            continue
        current = tries[-1]
        failures = sum(1 for t in tries if t.state is JobState.FAILED)
        if current.state is JobState.DELIVERED and current.has_video:
            statuses.append(SegmentStatus.READY)
        elif current.state is JobState.CANCELED:
            statuses.append(SegmentStatus.CANCELED)
        elif current.state is JobState.FAILED:
            statuses.append(SegmentStatus.FAILED if failures > RETRIES_PER_SEGMENT else SegmentStatus.RETRYING)
        elif failures:
            statuses.append(SegmentStatus.RETRYING)
        else:
            statuses.append(SegmentStatus.WAITING if current.state is JobState.QUEUED else SegmentStatus.RUNNING)
    return statuses


class NextStep(StrEnum):
    """What the story does next."""

    WAIT = "wait"
    RETRY = "retry"  # the segments in `retry` need a new job with a new seed
    JOIN = "join"
    ASK = "ask"  # a segment failed after its retry: offer "deliver as far as it got"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class Decision:
    """`decide`'s answer: the step, the segments to retry, and how many are ready from the start."""

    step: NextStep
    retry: tuple[int, ...] = ()
    ready_prefix: int = 0  # segments ready from the start, in order: what a partial delivery joins


def needs_retry(segments: int, jobs: Sequence[SegmentJob]) -> tuple[int, ...]:
    """Segments whose newest job failed and that have a retry left."""
    newest: dict[int, SegmentJob] = {}
    failures: dict[int, int] = {}
    for job in sorted(jobs, key=lambda j: j.job_id):
        newest[job.segment] = job
        if job.state is JobState.FAILED:
            failures[job.segment] = failures.get(job.segment, 0) + 1
    return tuple(
        k
        for k in range(segments)
        if k in newest and newest[k].state is JobState.FAILED and failures.get(k, 0) <= RETRIES_PER_SEGMENT
    )


def decide(segments: int, jobs: Sequence[SegmentJob]) -> Decision:
    """The story's next step from its segment jobs alone (the database is the only state)."""
    statuses = segment_statuses(segments, jobs)
    prefix = 0
    for status in statuses:
        if status is not SegmentStatus.READY:
            break
        prefix += 1
    if any(s is SegmentStatus.CANCELED for s in statuses):
        return Decision(NextStep.CANCEL, ready_prefix=prefix)
    retry = needs_retry(segments, jobs)
    if retry:
        return Decision(NextStep.RETRY, retry=retry, ready_prefix=prefix)
    if all(s is SegmentStatus.READY for s in statuses):
        return Decision(NextStep.JOIN, ready_prefix=prefix)
    if any(s is SegmentStatus.FAILED for s in statuses) and not any(
        s in (SegmentStatus.WAITING, SegmentStatus.RUNNING, SegmentStatus.RETRYING) for s in statuses
    ):
        return Decision(NextStep.ASK, ready_prefix=prefix)
    return Decision(NextStep.WAIT, ready_prefix=prefix)
