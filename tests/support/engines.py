"""`store_env`: the settings that put a whole engine (build_services / `kf2v-bot run`) on this test's database
engine: {} for the SQLite file in KF2V_DATA_DIR, or KF2V_DATABASE_URL of the session's PostgreSQL database
with an empty schema (each test starts from nothing). Parametrised through the `engine` fixture, so the
PostgreSQL half is skipped (or failed, under CI=true) by tests/support/postgres.py when no server answers.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest


async def empty_schema(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


@pytest.fixture
async def store_env(engine: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if engine == "sqlite":
        return {}
    url: str = request.getfixturevalue("postgres_database")
    await empty_schema(url)
    return {"KF2V_DATABASE_URL": url}
