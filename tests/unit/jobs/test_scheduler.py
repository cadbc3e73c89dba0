from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.jobs.models import JobRequest, Pause, PauseScope
from bot.jobs.scheduler import RATE_WINDOW_S, AccountLimits, FairQueue, QueuedJob, Scheduler

FLASH = "wan2.2-kf2v-flash"


SINCE = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)


def q(job_id: int, guild: int, user: int, seq: int | None = None, model: str = FLASH) -> QueuedJob:
    request = JobRequest(model=model, resolution="720P")
    return QueuedJob(job_id, guild, user, seq if seq is not None else job_id, request)


def drain(queue: FairQueue) -> list[int]:
    out = []
    while (job := queue.pop_next()) is not None:
        out.append(job.job_id)
    return out


def test_turns_across_guilds_then_users_fifo_per_user() -> None:
    queue = FairQueue()
    # guild 1: user 10 has jobs 1,2,3; user 11 has job 4. guild 2: user 20 has job 5, 6.
    for job in [q(1, 1, 10), q(2, 1, 10), q(3, 1, 10), q(4, 1, 11), q(5, 2, 20), q(6, 2, 20)]:
        queue.push(job)
    order = drain(queue)
    assert order == [1, 5, 4, 6, 2, 3]


def test_big_backlog_delays_a_newcomer_by_at_most_one_turn() -> None:
    queue = FairQueue()
    for i in range(50):
        queue.push(q(i + 1, 1, 10))
    assert queue.pop_next() is not None  # guild 1 already had a turn
    queue.push(q(100, 2, 20))
    assert queue.positions()[100] <= 2
    assert [queue.pop_next(), queue.pop_next()][1] == q(100, 2, 20) or queue.positions().get(100) is None


def test_positions_match_the_order_jobs_are_taken() -> None:
    queue = FairQueue()
    jobs = [q(i, g, u) for i, (g, u) in enumerate([(1, 1), (1, 1), (1, 2), (2, 3), (3, 4), (3, 4), (2, 5)], 1)]
    for job in jobs:
        queue.push(job)
    predicted = sorted(queue.positions(), key=lambda job_id: queue.positions()[job_id])
    assert drain(queue) == predicted


def test_requeued_job_goes_back_to_the_front_in_original_order() -> None:
    queue = FairQueue()
    for job in [q(1, 1, 10), q(2, 1, 10), q(3, 2, 20)]:
        queue.push(job)
    first = queue.pop_next()
    assert first is not None and first.job_id == 1
    queue.push(first, front=True)  # throttled: returns to the front of its user's queue and gets the turn
    assert drain(queue) == [1, 3, 2]


def test_pop_skips_models_without_room_but_keeps_user_fifo() -> None:
    queue = FairQueue()
    queue.push(q(1, 1, 10, model="plus"))
    queue.push(q(2, 1, 10, model=FLASH))  # same user, behind a plus job: must not jump it
    queue.push(q(3, 2, 20, model=FLASH))
    job = queue.pop_next({FLASH})
    assert job is not None and job.job_id == 3
    assert queue.pop_next({FLASH}) is None


def test_account_limits_in_flight_and_rate_with_creates_outstanding() -> None:
    limits = AccountLimits(["a"], {FLASH: (2, 2.0)})
    now = 100.0
    assert limits.choose(FLASH, now) == "a"
    limits.begin_submit("a", FLASH, 1, now)
    # An outstanding (or lost) create holds a slot but does not stop the account's next submission.
    assert limits.choose(FLASH, now) == "a"
    limits.begin_submit("a", FLASH, 2, now)
    assert limits.choose(FLASH, now) is None  # two in flight, both answers still outstanding
    limits.end_submit("a", 1)
    limits.end_submit("a", 2)
    assert limits.in_flight() == {("a", FLASH): 2}
    limits.release("a", FLASH, 1)
    assert limits.choose(FLASH, now) is None  # two submissions in this second
    ready = limits.ready_at("a", FLASH, now)
    assert ready is not None and ready > now + 1.0
    assert limits.choose(FLASH, ready) == "a"


def test_forget_frees_the_slot_wherever_the_job_held_it() -> None:
    limits = AccountLimits(["a", "b"], {FLASH: (1, 5.0)})
    limits.begin_submit("b", FLASH, 7, 0.0)
    assert limits.in_flight() == {("b", FLASH): 1}
    limits.forget(7)
    assert limits.in_flight() == {("b", FLASH): 0}


def test_throttle_cooldown_grows_and_resets() -> None:
    limits = AccountLimits(["a"], {FLASH: (2, 2.0)})
    first = limits.throttled("a", FLASH, 0.0)
    second = limits.throttled("a", FLASH, 0.0)
    assert second == 2 * first
    assert limits.choose(FLASH, 1.0) is None
    limits.succeeded("a", FLASH)
    assert limits.throttled("a", FLASH, 0.0) == first


def test_scheduler_spreads_over_accounts_and_respects_pause() -> None:
    scheduler = Scheduler(AccountLimits(["a", "b"], {FLASH: (2, 2.0)}))
    for i in range(5):
        scheduler.queue.push(q(i + 1, 1, 10 + i))
    picked: list[str] = []
    now = 0.0
    while (got := scheduler.next_dispatch(now)) is not None:
        job, account = got
        scheduler.limits.begin_submit(account, job.model, job.job_id, now)
        scheduler.limits.end_submit(account, job.job_id)
        picked.append(account)
        now += 0.01
    # Two slots per account: the least loaded account takes each job, so they alternate.
    assert picked == ["a", "b", "a", "b"]
    assert len(scheduler.queue) == 1  # the fifth waits for a slot
    scheduler.limits.release("a", FLASH, 1)
    scheduler.pause(Pause(PauseScope.ALL, "", "owner", SINCE))
    assert scheduler.next_dispatch(10.0) is None
    assert scheduler.wake_at(10.0) is None
    assert scheduler.pause_for(1) == Pause(PauseScope.ALL, "", "owner", SINCE)


def test_a_paused_guild_is_skipped_without_holding_the_others() -> None:
    scheduler = Scheduler(AccountLimits(["a"], {FLASH: (10, 100.0)}))
    for job_id, guild in [(1, 10), (2, 20), (3, 10), (4, 20)]:
        scheduler.queue.push(q(job_id, guild, user=guild))
    held = Pause(PauseScope.GUILD, "10", "spring cleaning", SINCE)
    scheduler.pause(held)
    picked: list[int] = []
    while (got := scheduler.next_dispatch(float(len(picked)))) is not None:
        picked.append(got[0].job_id)
    assert picked == [2, 4]  # guild 20's jobs went; guild 10's keep their place
    assert scheduler.wake_at(5.0) is None  # only paused jobs left: nothing to wake for
    assert (scheduler.pause_for(10), scheduler.pause_for(20)) == (held, None)
    assert scheduler.queue.positions() == {1: 1, 3: 2}
    scheduler.resume(PauseScope.GUILD, "10")
    assert scheduler.pauses() == []
    assert [scheduler.next_dispatch(9.0 + i)[0].job_id for i in range(2)] == [1, 3]  # type: ignore[index]


def test_every_account_paused_holds_every_guild() -> None:
    scheduler = Scheduler(AccountLimits(["a", "b"], {FLASH: (1, 1.0)}))
    scheduler.limits.pause("a", "Arrearage", since=SINCE)
    assert scheduler.pause_for(7) is None  # b still takes jobs
    scheduler.pause(Pause(PauseScope.ACCOUNT, "b", "InvalidApiKey", SINCE))
    assert scheduler.pause_for(7) == Pause(PauseScope.ACCOUNT, "a", "Arrearage", SINCE)
    assert {p.target for p in scheduler.pauses()} == {"a", "b"}


def test_a_submission_counts_in_the_rate_window_from_when_it_is_sent() -> None:
    limits = AccountLimits(["a"], {FLASH: (5, 2.0)})
    limits.begin_submit("a", FLASH, 1, 0.0)
    limits.begin_submit("a", FLASH, 2, 0.1)  # picked while job 1's create is still being built
    limits.mark_sent("a", FLASH, 2, 0.2)
    limits.mark_sent("a", FLASH, 1, 0.4)  # building job 1's request took 0.4 s: the provider sees it at 0.4
    limits.end_submit("a", 1)
    limits.end_submit("a", 2)
    # The window holds the sends (0.2, 0.4), not the picks (0.0, 0.1): the first leaves it at 0.2 + 1.1.
    assert limits.ready_at("a", FLASH, 1.0) == pytest.approx(0.2 + RATE_WINDOW_S)


def test_pop_with_a_blocked_model_matches_a_plain_scan_through_any_history() -> None:
    """pop_next skips guilds by a per-guild count of their users' next-job models: it must pick exactly what a
    plain scan of every user in turn order would, through pushes (to the front, out of order), removals and
    pops with and without a model filter."""
    import random

    rng = random.Random(7)
    queue = FairQueue()
    models = (FLASH, "plus", "other")
    live: list[int] = []
    for step in range(4000):
        roll = rng.random()
        if roll < 0.45 or not live:
            seq = rng.randrange(10_000) * 10_000 + step  # unique, in no particular order
            job = q(step, rng.randrange(6), rng.randrange(4), seq, rng.choice(models))
            queue.push(job, front=rng.random() < 0.15)
            live.append(job.job_id)
        elif roll < 0.6:
            removed = queue.remove(live.pop(rng.randrange(len(live))))
            assert removed is not None
        else:
            eligible = set(rng.sample(models, rng.randrange(1, 3))) if rng.random() < 0.8 else None
            expected = next(
                (
                    jobs[0]
                    for users in queue._guilds.values()
                    for jobs in users.values()
                    if eligible is None or jobs[0].model in eligible
                ),
                None,
            )
            got = queue.pop_next(eligible)
            assert got == expected
            if got is not None:
                live.remove(got.job_id)
        recount: dict[int, dict[str, int]] = {}
        for guild, users in queue._guilds.items():
            for jobs in users.values():
                counts = recount.setdefault(guild, {})
                counts[jobs[0].model] = counts.get(jobs[0].model, 0) + 1
        assert queue._heads == recount
    assert len(queue) == len(live)


def test_a_queued_model_without_limits_is_passed_over_not_a_crash() -> None:
    # A model that left the catalog (or the region) while a job of it waited: the worker fails such jobs;
    # the scheduler must never stop on them (it raised KeyError, which killed the dispatcher).
    scheduler = Scheduler(AccountLimits(["acct-1"], {FLASH: (2, 2.0)}))
    scheduler.queue.push(q(1, guild=1, user=1, model="gone-model"))
    scheduler.queue.push(q(2, guild=2, user=2))
    assert not scheduler.limits.serves("gone-model")
    picked = scheduler.next_dispatch(0.0)
    assert picked is not None and picked[0].job_id == 2
    assert scheduler.next_dispatch(0.0) is None
    assert scheduler.wake_at(0.0) is None
    scheduler.limits.remember_submit("acct-1", "gone-model", 0.0)  # a restart's rate window: ignored
