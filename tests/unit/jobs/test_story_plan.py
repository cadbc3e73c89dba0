"""Story rules: prompts per segment, segment statuses, and what the story does next."""

from __future__ import annotations

import pytest

from bot.jobs.models import JobState
from bot.jobs.story.plan import (
    Decision,
    EmptySegmentPrompt,
    NextStep,
    PromptCountMismatch,
    SegmentJob,
    SegmentStatus,
    decide,
    new_seed,
    segment_statuses,
    split_prompts,
)


def test_one_prompt_serves_every_segment() -> None:
    assert split_prompts("  a slow pan  ", 3) == ["a slow pan"] * 3


def test_prompts_per_segment_are_split_on_the_bar() -> None:
    assert split_prompts("dawn | noon |dusk", 3) == ["dawn", "noon", "dusk"]


@pytest.mark.parametrize(("prompt", "count"), [("a | b", 2), ("a|b|c|d", 4)])
def test_a_count_that_does_not_match_names_both_numbers(prompt: str, count: int) -> None:
    with pytest.raises(PromptCountMismatch) as caught:
        split_prompts(prompt, 3)
    assert (caught.value.prompts, caught.value.segments) == (count, 3)
    assert f"{count} prompts for 3 segments" in str(caught.value)


def test_an_empty_segment_prompt_is_refused_by_position() -> None:
    with pytest.raises(EmptySegmentPrompt) as caught:
        split_prompts("a || c", 3)
    assert caught.value.segment == 1


def test_a_new_seed_is_never_the_previous_one() -> None:
    seeds = {new_seed(7) for _ in range(200)}
    assert 7 not in seeds and all(0 <= s <= 2_147_483_647 for s in seeds)


def job(job_id: int, segment: int, state: JobState, video: bool = False) -> SegmentJob:
    return SegmentJob(job_id, segment, state, video or state is JobState.DELIVERED)


def test_a_story_joins_when_every_segment_is_on_disk() -> None:
    jobs = [job(1, 0, JobState.DELIVERED), job(2, 1, JobState.DELIVERED), job(3, 2, JobState.DELIVERED)]
    assert decide(3, jobs) == Decision(NextStep.JOIN, ready_prefix=3)


def test_a_failed_segment_is_retried_once_then_the_user_is_asked() -> None:
    first = [job(1, 0, JobState.DELIVERED), job(2, 1, JobState.FAILED), job(3, 2, JobState.RUNNING)]
    assert decide(3, first) == Decision(NextStep.RETRY, retry=(1,), ready_prefix=1)

    retrying = [*first, job(4, 1, JobState.QUEUED)]
    assert segment_statuses(3, retrying) == [SegmentStatus.READY, SegmentStatus.RETRYING, SegmentStatus.RUNNING]
    assert decide(3, retrying).step is NextStep.WAIT

    failed_again = [*first[:2], job(3, 2, JobState.DELIVERED), job(4, 1, JobState.FAILED)]
    assert segment_statuses(3, failed_again)[1] is SegmentStatus.FAILED
    # Nothing else runs: the user chooses; segment 0 is what a partial delivery would show.
    assert decide(3, failed_again) == Decision(NextStep.ASK, ready_prefix=1)


def test_the_question_waits_for_the_other_segments() -> None:
    jobs = [job(1, 0, JobState.RUNNING), job(2, 1, JobState.FAILED), job(3, 1, JobState.FAILED)]
    assert decide(2, jobs).step is NextStep.WAIT


def test_a_cancelled_segment_cancels_the_story() -> None:
    jobs = [job(1, 0, JobState.DELIVERED), job(2, 1, JobState.CANCELED)]
    assert decide(2, jobs).step is NextStep.CANCEL


def test_a_redone_segment_counts_by_its_newest_job() -> None:
    jobs = [job(1, 0, JobState.DELIVERED), job(2, 1, JobState.DELIVERED), job(3, 1, JobState.RUNNING)]
    assert segment_statuses(2, jobs) == [SegmentStatus.READY, SegmentStatus.RUNNING]
    assert decide(2, jobs) == Decision(NextStep.WAIT, ready_prefix=1)


def test_a_segment_is_waiting_while_queued_and_running_from_its_submission() -> None:
    jobs = [job(1, 0, JobState.QUEUED), job(2, 1, JobState.SUBMITTING), job(3, 2, JobState.SUCCEEDED)]
    assert segment_statuses(3, jobs) == [SegmentStatus.WAITING, SegmentStatus.RUNNING, SegmentStatus.RUNNING]
    assert decide(3, jobs).step is NextStep.WAIT
