from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from bot.background import BackgroundTasks


async def test_spawned_task_runs_and_is_forgotten_when_done() -> None:
    tasks = BackgroundTasks()

    async def work() -> int:
        await asyncio.sleep(0)
        return 7

    task = tasks.spawn(work(), "work")
    assert task.get_name() == "work"
    assert tasks.names() == ["work"]
    assert await task == 7
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert len(tasks) == 0


async def test_tasks_are_held_even_when_the_caller_drops_them() -> None:
    tasks = BackgroundTasks()
    gate = asyncio.Event()
    finished = asyncio.Event()

    async def waiter() -> None:
        await gate.wait()
        finished.set()

    tasks.spawn(waiter(), "waiter")  # return value deliberately dropped
    gc.collect()
    gate.set()
    await asyncio.wait_for(finished.wait(), 1)


async def test_a_crash_is_logged_with_the_task_name(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks()

    async def broken() -> None:
        raise ValueError("bad row")

    task = tasks.spawn(broken(), "poller:job-42")
    await asyncio.wait([task])
    await asyncio.sleep(0)
    [record] = [r for r in caplog.records if r.name == "bot.background"]
    assert record.levelno == logging.ERROR
    assert "poller:job-42" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
    del task
    gc.collect()  # asyncio would log "Task exception was never retrieved" here if we hadn't
    assert not [r for r in caplog.records if r.name == "asyncio"]


async def test_cancellation_is_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks()
    task = tasks.spawn(asyncio.sleep(10), "sleeper")
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait([task])
    await asyncio.sleep(0)
    assert not caplog.records
    assert len(tasks) == 0


async def test_close_cancels_and_awaits_everything() -> None:
    tasks = BackgroundTasks()
    cleaned: list[str] = []

    async def loop_forever(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits still gets to run
            cleaned.append(name)

    for name in ("a", "b", "c"):
        tasks.spawn(loop_forever(name), name)
    await asyncio.sleep(0)
    await tasks.close(timeout=1)
    assert sorted(cleaned) == ["a", "b", "c"]
    assert len(tasks) == 0
    assert tasks.closing


async def test_no_new_tasks_after_close() -> None:
    tasks = BackgroundTasks()
    await tasks.close()

    async def late() -> None:
        raise AssertionError("must not run")

    # The refused coroutine is closed, so no "coroutine was never awaited" warning (an error here).
    with pytest.raises(RuntimeError, match="late-job"):
        tasks.spawn(late(), "late-job")


async def test_close_gives_up_on_a_task_that_ignores_cancellation(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks()
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # a bug we must survive at shutdown

    task = tasks.spawn(stubborn(), "stubborn")
    await asyncio.sleep(0)
    await tasks.close(timeout=0.05)
    assert not task.done()  # close gave up on it instead of waiting for it
    assert any("stubborn" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    release.set()
    await task


async def test_an_error_during_cancellation_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks()

    async def bad_cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            raise OSError("could not flush")

    tasks.spawn(bad_cleanup(), "flusher")
    await asyncio.sleep(0)
    await tasks.close(timeout=1)
    await asyncio.sleep(0)
    assert any("flusher" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_a_supervised_task_is_restarted_with_backoff_and_counted_in_metrics() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from bot.health import Metrics

    tasks = BackgroundTasks()
    runs = 0
    steady = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise ConnectionResetError("the database went away")
        steady.set()
        await asyncio.Event().wait()  # a long-lived loop

    metrics = Metrics()
    metrics.attach(tasks=lambda: tasks.supervised.values())
    task = tasks.supervise("follower", flaky, backoff_s=0.01, max_backoff_s=0.05)
    await asyncio.wait_for(steady.wait(), 5)
    health = tasks.supervised["follower"]
    assert (health.state, health.restarts) == ("running", 2)
    assert health.last_error == "ConnectionResetError: the database went away"
    families = {f.name: f for f in text_string_to_metric_families((await metrics.render()).decode())}
    [restarts] = [s for s in families["kf2v_task_restarts"].samples if s.name == "kf2v_task_restarts_total"]
    assert (restarts.labels, restarts.value) == ({"task": "follower"}, 2.0)
    [up] = families["kf2v_task_up"].samples
    assert (up.labels, up.value) == ({"task": "follower"}, 1.0)
    await tasks.close(1.0)
    assert task.done() and health.state == "stopped"
