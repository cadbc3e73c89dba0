"""The one wait helper of the suite: poll a condition (plain or async) until it holds or time runs out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def wait_until(predicate: Callable[[], Any], within: float = 30.0, interval: float = 0.02) -> None:
    """Return once `predicate()` (awaited if it returns a coroutine) is truthy; TimeoutError after `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(interval)
    raise TimeoutError("condition not met in time")
