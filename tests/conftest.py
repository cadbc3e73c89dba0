"""Shared fixtures: `world` (both emulators and the real bot, tests/support/world.py; a module overrides
`world_settings` to change it), PostgreSQL for the tests that run over both database engines
(tests/support/postgres.py), and the settings that put a whole engine on either (tests/support/engines.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.world import World, close_world, make_world

pytest_plugins = ("tests.support.postgres", "tests.support.engines")


@pytest.fixture
def world_settings() -> dict[str, Any]:
    """Keyword arguments for make_world (`emulator=` and settings overrides); a module overrides this fixture."""
    return {}


@pytest.fixture
async def world(tmp_path: Path, world_settings: dict[str, Any]) -> AsyncIterator[World]:
    """The Discord emulator, the DashScope emulator (fast timings) and the real bot between them."""
    made = await make_world(tmp_path, **world_settings)
    try:
        yield made
    finally:
        await close_world(made)
