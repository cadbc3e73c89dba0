"""PostgreSQL for the tests: a fresh database per test session on the local server, dropped afterwards.

KF2V_TEST_DATABASE_URL names the maintenance connection (default: the `test` database of the local
server, trust authentication). Without a reachable server the PostgreSQL half of a test is skipped with a
plain reason, except in CI (CI=true), where it fails: `.ci/run` must never skip it silently.

Test modules import the fixtures they use: `database`, `open_database_of_engine`, `engine`,
`postgres_url`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from bot.jobs.db import Database, PostgresDatabase, SqliteDatabase, migrate, redact_url

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
ENGINES = ("sqlite", "postgresql")
T = TypeVar("T")


def maintenance_url() -> str:
    return os.environ.get("KF2V_TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL


def when_unreachable(url: str, error: str, environ: dict[str, str]) -> tuple[Literal["fail", "skip"], str]:
    """What to do without a server: CI must fail (issue 14), a developer's machine skips, saying why."""
    where = redact_url(url)
    if environ.get("CI", "").lower() == "true":
        return "fail", f"CI=true but no PostgreSQL server is reachable at {where}: {error}"
    return "skip", f"PostgreSQL half skipped: no server reachable at {where} ({error}); set KF2V_TEST_DATABASE_URL"


def _in_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on its own loop in another thread: fixtures may be set up while a loop runs."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _probe(url: str) -> str | None:
    try:
        await _admin(url, "SELECT 1")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """URL of a database created for this test session (dropped at its end)."""
    url = maintenance_url()
    error = _in_thread(lambda: _probe(url))
    if error is not None:
        action, message = when_unreachable(url, error, dict(os.environ))
        if action == "fail":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    name = f"kf2v_test_{os.getpid()}_{secrets.token_hex(4)}"
    _in_thread(lambda: _admin(url, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(url, name)
    finally:
        _in_thread(lambda: _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def postgres_url(postgres_database: str) -> str:
    """The session database with an empty schema: each test starts from nothing."""
    await _admin(postgres_database, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    return postgres_database


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


OpenDatabase = Callable[[], Awaitable[Database]]


@pytest.fixture
async def open_database_of_engine(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OpenDatabase]:
    """Opens (migrated) Database objects of this test's engine on one shared, initially empty database:
    each call is another connection (SQLite) or pool (PostgreSQL), as another process would have."""
    if engine == "postgresql":
        url: str = request.getfixturevalue("postgres_database")
        await _admin(url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    opened: list[Database] = []

    async def open_one() -> Database:
        db: Database
        if engine == "postgresql":
            db = await PostgresDatabase.open(url, max_connections=4)
        else:
            db = await SqliteDatabase.open(tmp_path / "data" / "kf2v.sqlite3")
        opened.append(db)
        await migrate(db)
        return db

    yield open_one
    for db in opened:
        await db.close()


@pytest.fixture
async def database(open_database_of_engine: OpenDatabase) -> Database:
    return await open_database_of_engine()
