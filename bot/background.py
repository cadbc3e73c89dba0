"""The one way to start fire-and-forget work.

asyncio keeps only weak references to tasks, so a task nobody holds can be garbage-collected mid-run; and
an exception in a task nobody awaits is reported only when the task is collected, if ever. `BackgroundTasks`
holds every task until it ends, logs crashes at once (with the task's name), and on shutdown cancels and
awaits whatever is still running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class TaskHealth:
    """What `/healthz` and `/metrics` show of one supervised long-lived task."""

    name: str
    state: Literal["running", "restarting", "stopped"] = "running"
    restarts: int = 0
    last_error: str | None = None


class BackgroundTasks:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._log = logger or log
        self.supervised: dict[str, TaskHealth] = {}

    def supervise(
        self,
        name: str,
        factory: Callable[[], Coroutine[Any, Any, None]],
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 5.0,
    ) -> asyncio.Task[None]:
        """Run the long-lived `factory()` until it returns or is cancelled, restarting it with back-off (doubling
        up to `max_backoff_s`) each time it raises. Its state and restarts are in `supervised[name]`."""
        health = self.supervised[name] = TaskHealth(name)
        return self.spawn(self._keep_running(health, factory, backoff_s, max_backoff_s), name)

    async def _keep_running(
        self,
        health: TaskHealth,
        factory: Callable[[], Coroutine[Any, Any, None]],
        backoff_s: float,
        max_backoff_s: float,
    ) -> None:
        delay = backoff_s
        try:
            while True:
                health.state = "running"
                started = time.monotonic()
                try:
                    await factory()
                    return
                except Exception as exc:
                    if time.monotonic() - started > 4 * max_backoff_s:
                        delay = backoff_s  # it ran well for a while: this is a new fault, not the same one
                    health.state = "restarting"
                    health.restarts += 1
                    health.last_error = f"{type(exc).__name__}: {exc}"[:300]
                    self._log.exception(
                        "background task %r crashed; restarting in %.1f s", health.name, delay,
                        extra={"bg_task": health.name},
                    )  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(max_backoff_s, delay * 2)
        finally:
            health.state = "stopped"

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Start `coro` as a task named `name` (must be called from the running event loop)."""
        if self._closing:
            coro.close()  # never started: closing it avoids a "never awaited" warning
            raise RuntimeError(f"background tasks are shutting down; not starting {name!r}")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # also marks it retrieved, so asyncio doesn't report it a second time
        if error is not None:
            self._log.exception(
                "background task %r crashed", task.get_name(), exc_info=error, extra={"bg_task": task.get_name()}
            )

    @property
    def closing(self) -> bool:
        return self._closing

    def names(self) -> list[str]:
        return sorted(task.get_name() for task in self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    # Not asyncio.timeout() around the call: cancelling close() itself would stop it awaiting the tasks it
    # cancelled. `timeout` bounds only the wait after cancellation, and close() returns normally either way.
    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Refuse new tasks, cancel the running ones and wait up to `timeout` seconds for them to end."""
        self._closing = True
        tasks = set(self._tasks)
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            # A task that swallows cancellation or blocks in its cleanup: name it, don't hang shutdown.
            self._log.warning(
                "%d background task(s) still running %.1f s after cancellation: %s",
                len(pending),
                timeout,
                ", ".join(sorted(task.get_name() for task in pending)),
            )
