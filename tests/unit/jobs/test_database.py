"""bot.jobs.db on both engines: placeholders, rows, transactions, migrations, leases, notifications and
concurrent admissions from several connections (another process's pool, as far as the server can tell)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from bot.jobs.db import (
    Database,
    LeaseLost,
    PostgresDatabase,
    SqliteDatabase,
    Transaction,
    latest_version,
    migrate,
    open_database,
    schema_version,
)
from bot.jobs.db.migrate import describe_indexes, describe_schema, migrations
from bot.jobs.db.sql import PlaceholderError, redact_url, to_numbered
from bot.settings import Settings
from tests.support.postgres import OpenDatabase, when_unreachable

BIG_DISCORD_ID = 1_234_567_890_123_456_789  # needs 64 bits: BIGINT on PostgreSQL


# --- SQL text ------------------------------------------------------------------------------------------
def test_question_marks_become_numbered_outside_literals_and_comments() -> None:
    sql = """SELECT 'is it?', "odd?col", x FROM t -- really?
             WHERE a = ? AND b = 'it''s ?' /* or ? */ AND c IN (?, ?)"""
    assert to_numbered(sql) == (
        """SELECT 'is it?', "odd?col", x FROM t -- really?
             WHERE a = $1 AND b = 'it''s ?' /* or ? */ AND c IN ($2, $3)"""
    )


@pytest.mark.parametrize("sql", ["SELECT $1", "SELECT $$x$$", "SELECT 'open", "SELECT 1 /* open"])
def test_statements_that_cannot_be_numbered_safely_are_refused(sql: str) -> None:
    with pytest.raises(PlaceholderError):
        to_numbered(sql)


def test_database_urls_lose_their_password_in_every_rendering(tmp_path: Path) -> None:
    assert redact_url("postgresql://kf2v:s3cret@db:5432/kf2v") == "postgresql://kf2v:***@db:5432/kf2v"
    assert redact_url("postgresql://db/kf2v?password=s3cret&sslmode=require") == (
        "postgresql://db/kf2v?password=***&sslmode=require"
    )
    assert redact_url("postgresql://kf2v@db/kf2v") == "postgresql://kf2v@db/kf2v"
    settings = Settings(KF2V_DATABASE_URL="postgresql://kf2v:s3cret@db/kf2v", KF2V_DATA_DIR=tmp_path)
    assert settings.database_url == "postgresql://kf2v:s3cret@db/kf2v"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


def test_unreachable_server_fails_in_ci_and_skips_elsewhere_saying_why() -> None:
    url = "postgresql://postgres:pw@127.0.0.1:1/test"
    action, message = when_unreachable(url, "ConnectionRefusedError", {"CI": "true"})
    assert action == "fail" and "127.0.0.1:1" in message and "pw" not in message
    action, message = when_unreachable(url, "ConnectionRefusedError", {})
    assert action == "skip" and message.startswith("PostgreSQL half skipped")


# --- both engines ----------------------------------------------------------------------------------------
async def _toy_table(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute_script(
            "CREATE TABLE toy (id BIGINT PRIMARY KEY, name TEXT NOT NULL, owner BIGINT, note TEXT);"
            "CREATE TABLE budget (guild BIGINT PRIMARY KEY, total BIGINT NOT NULL);"
            "CREATE TABLE spend (id BIGINT PRIMARY KEY, guild BIGINT NOT NULL, amount BIGINT NOT NULL)"
        )


async def test_rows_answer_by_column_name_and_position(database: Database) -> None:
    await _toy_table(database)
    await database.execute_many(
        "INSERT INTO toy (id, name, owner, note) VALUES (?, ?, ?, ?)",
        [(1, "first frame", BIG_DISCORD_ID, "what?"), (2, "second", None, None)],
    )
    row = await database.fetch_one("SELECT id, name, owner, note, 'literal ?' AS lit FROM toy WHERE id = ?", (1,))
    assert row is not None
    assert row["name"] == "first frame" and row[1] == "first frame"
    assert row["owner"] == BIG_DISCORD_ID and row["note"] == "what?" and row["lit"] == "literal ?"
    assert tuple(row) == (1, "first frame", BIG_DISCORD_ID, "what?", "literal ?")
    assert list(row.keys()) == ["id", "name", "owner", "note", "lit"]
    rows = await database.fetch_all("SELECT id FROM toy WHERE id IN (?, ?) ORDER BY id", (1, 2))
    assert [r["id"] for r in rows] == [1, 2]
    assert await database.fetch_one("SELECT id FROM toy WHERE id = ?", (99,)) is None


async def test_execute_counts_the_rows_it_changed(database: Database) -> None:
    await _toy_table(database)
    await database.execute_many("INSERT INTO toy (id, name) VALUES (?, ?)", [(i, f"n{i}") for i in range(5)])
    assert await database.execute("UPDATE toy SET note = ? WHERE id < ?", ("x", 3)) == 3
    assert await database.execute("DELETE FROM toy WHERE id = ?", (42,)) == 0


async def test_a_failing_transaction_leaves_nothing_behind(database: Database) -> None:
    await _toy_table(database)
    heard: list[str] = []
    stop = await database.listen("jobs", lambda _channel, payload: heard.append(payload))

    class Refused(Exception):
        pass

    with pytest.raises(Refused):
        async with database.transaction() as tx:
            await tx.execute("INSERT INTO toy (id, name) VALUES (?, ?)", (1, "kept?"))
            assert await tx.fetch_one("SELECT name FROM toy WHERE id = ?", (1,)) is not None  # visible inside
            tx.notify("jobs", "rolled back")
            raise Refused
    async with database.transaction() as tx:
        await tx.execute("INSERT INTO toy (id, name) VALUES (?, ?)", (2, "committed"))
        tx.notify("jobs", "committed")
    await _until(lambda: bool(heard))
    await stop()
    assert [r["id"] for r in await database.fetch_all("SELECT id FROM toy")] == [2]
    assert heard == ["committed"]  # the rolled-back transaction's notification never left


async def test_migrations_reach_the_latest_version_and_rerun_as_no_ops(open_database_of_engine: OpenDatabase) -> None:
    first = await open_database_of_engine()
    second = await open_database_of_engine()  # another process starting at the same time
    assert await schema_version(first) == latest_version(first.dialect)
    reached = await asyncio.gather(migrate(first), migrate(second))
    assert list(reached) == [latest_version(first.dialect)] * 2
    assert "jobs" in await describe_schema(first)


async def test_both_engines_have_the_same_numbered_steps_and_schema(postgres_url: str, tmp_path: Path) -> None:
    assert [m.version for m in migrations("sqlite")] == [m.version for m in migrations("postgresql")]
    assert latest_version("sqlite") == latest_version("postgresql") > 0
    sqlite = await open_database(Settings(KF2V_DATA_DIR=tmp_path))
    postgres = await open_database(Settings(KF2V_DATA_DIR=tmp_path, KF2V_DATABASE_URL=postgres_url))
    try:
        assert isinstance(sqlite, SqliteDatabase) and isinstance(postgres, PostgresDatabase)
        assert await schema_version(sqlite) == await schema_version(postgres) == latest_version()
        assert await describe_schema(sqlite) == await describe_schema(postgres)
        assert await describe_indexes(sqlite) == await describe_indexes(postgres)
    finally:
        await sqlite.close()
        await postgres.close()


async def test_lease_has_one_holder_and_a_new_epoch_for_each_new_holder(open_database_of_engine: OpenDatabase) -> None:
    db_a = await open_database_of_engine()
    # SQLite leases are in-process: both holders share one Database. PostgreSQL: two pools, two "processes".
    db_b = db_a if db_a.dialect == "sqlite" else await open_database_of_engine()
    first = await db_a.acquire_lease("account:a1", "process-a", ttl=30)
    assert first is not None
    assert await db_b.acquire_lease("account:a1", "process-b", ttl=30) is None  # live: not taken
    assert await db_a.acquire_lease("account:a1", "process-a", ttl=30) == first  # own lease: same epoch
    assert await db_a.renew_lease("account:a1", "process-a", first, ttl=30)
    assert await db_b.acquire_lease("account:a2", "process-b", ttl=30) is not None  # other names are separate

    # Lapsed (ttl 0: expired the moment it was renewed): the next holder takes it with a larger epoch.
    assert await db_a.renew_lease("account:a1", "process-a", first, ttl=0)
    second = await db_b.acquire_lease("account:a1", "process-b", ttl=30)
    assert second is not None and second > first
    assert not await db_a.renew_lease("account:a1", "process-a", first, ttl=30)  # A learns it lost the lease

    # Fencing: a write under the stale epoch is refused inside its transaction, and rolled back.
    await _toy_table(db_a)
    with pytest.raises(LeaseLost):
        async with db_a.transaction() as tx:
            await tx.execute("INSERT INTO toy (id, name) VALUES (?, ?)", (1, "stale submission"))
            await tx.check_epoch("account:a1", first)
    async with db_b.transaction() as tx:
        await tx.check_epoch("account:a1", second)
        await tx.execute("INSERT INTO toy (id, name) VALUES (?, ?)", (2, "live submission"))
    assert [r["name"] for r in await db_a.fetch_all("SELECT name FROM toy")] == ["live submission"]

    # Released: taken at once by the other holder, the epoch still growing.
    await db_b.release_lease("account:a1", "process-b", second)
    third = await db_a.acquire_lease("account:a1", "process-a", ttl=30)
    assert third is not None and third > second
    with pytest.raises(LeaseLost):
        async with db_b.transaction() as tx:
            await tx.check_epoch("account:a1", second)


async def test_notifications_reach_listeners_of_another_connection(open_database_of_engine: OpenDatabase) -> None:
    listener_db = await open_database_of_engine()
    sender_db = listener_db if listener_db.dialect == "sqlite" else await open_database_of_engine()
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    stop = await listener_db.listen("job_changed", lambda channel, payload: heard.put_nowait((channel, payload)))
    await sender_db.notify("job_changed", '{"job": 7, "state": "queued"}')
    async with sender_db.transaction() as tx:
        tx.notify("job_changed", '{"job": 8, "state": "queued"}')
        tx.notify("other_channel", "not for this listener")
    assert await asyncio.wait_for(heard.get(), 10) == ("job_changed", '{"job": 7, "state": "queued"}')
    assert await asyncio.wait_for(heard.get(), 10) == ("job_changed", '{"job": 8, "state": "queued"}')
    await stop()
    await sender_db.notify("job_changed", "after stop")
    await sender_db.notify("job_changed", "after stop, again")
    await sender_db.fetch_all("SELECT 1")
    assert heard.empty()
    with pytest.raises(ValueError):
        await listener_db.listen("Jobs; DROP TABLE jobs", lambda _c, _p: None)


async def test_lock_rows_returns_the_rows_it_locks(database: Database) -> None:
    await _toy_table(database)
    await database.execute("INSERT INTO toy (id, name) VALUES (?, ?)", (1, "locked"))
    async with database.transaction() as tx:
        rows = await tx.lock_rows("SELECT id, name FROM toy WHERE id = ?", (1,))
        assert [r["name"] for r in rows] == ["locked"]


ADMISSIONS = 200
BUDGET = 57  # units; each admission costs 1, so exactly 57 of the 200 fit


async def _admit(db: Database, guild: int, ids: itertools.count[int]) -> bool:
    """The store's pattern: lock the guild, read what is left, write the reservation, one transaction."""

    async def attempt(tx: Transaction) -> bool:
        await tx.lock(f"guild:{guild}")
        row = await tx.fetch_one(
            """SELECT b.total - COALESCE((SELECT SUM(s.amount) FROM spend AS s WHERE s.guild = b.guild), 0)
               AS left_over FROM budget AS b WHERE b.guild = ?""",
            (guild,),
        )
        assert row is not None
        if int(row["left_over"]) < 1:
            return False
        await tx.execute("INSERT INTO spend (id, guild, amount) VALUES (?, ?, ?)", (next(ids), guild, 1))
        return True

    return await db.run_in_transaction(attempt)


async def test_concurrent_admissions_from_three_pools_never_overspend(open_database_of_engine: OpenDatabase) -> None:
    pools = [await open_database_of_engine() for _ in range(3)]
    await _toy_table(pools[0])
    await pools[0].execute_many("INSERT INTO budget (guild, total) VALUES (?, ?)", [(1, BUDGET), (2, 10**6)])
    ids = itertools.count(1)
    results = await asyncio.gather(*(_admit(pools[i % 3], 1, ids) for i in range(ADMISSIONS)))
    assert results.count(True) == BUDGET and results.count(False) == ADMISSIONS - BUDGET
    row = await pools[1].fetch_one("SELECT COUNT(*) AS n, SUM(amount) AS spent FROM spend WHERE guild = ?", (1,))
    assert row is not None and int(row["n"]) == BUDGET and int(row["spent"]) == BUDGET


async def _until(condition: object) -> None:
    assert callable(condition)
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")
