"""`kf2v-bot migrate-db --to postgresql://…`: a real SQLite file copied into the local PostgreSQL server."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.jobs.db import PostgresDatabase, SqliteDatabase, latest_version, migrate
from bot.jobs.db.copy import CopyRefused, copy_sqlite_to_postgres
from bot.jobs.models import JobState

GUILDS = (111, 222, 333)
NOW = "2025-01-02T03:04:05+00:00"


def _job_row(job_id: int, guild: int, state: JobState, parent: int | None) -> tuple[Any, ...]:
    task = f"task-{job_id}" if state not in (JobState.QUEUED, JobState.SUBMITTING, JobState.CANCELED) else None
    return (
        job_id, guild, 500 + job_id, 900 + job_id, "wan2.2-kf2v-flash", "480P", f"prompt {job_id} ✓ 'quoted'",
        "frames/a.png", parent, state.value, job_id, "main", task, 700 * job_id, "reserved", "2025-01-02",
        "2025-01", NOW, NOW,
    )  # fmt: skip


async def _make_source(path: Path) -> dict[str, int]:
    """A migrated SQLite file with jobs in every state, their events and ledger, policies, meta, facts."""
    db = await SqliteDatabase.open(path)
    await migrate(db)
    states = list(JobState)
    jobs = []
    for n in range(1, 41):
        parent = n - 8 if n > 8 and n % 5 == 0 else None  # regenerated jobs point at older ones
        jobs.append(_job_row(n, GUILDS[n % 3], states[n % len(states)], parent))
    async with db.transaction() as tx:
        await tx.execute_many(
            """INSERT INTO jobs (id, guild_id, channel_id, user_id, model, resolution, prompt, first_frame,
               parent_job_id, state, queue_seq, account, task_id, cost_reserved, charge_state, period_day,
               period_month, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
            jobs,
        )
        await tx.execute_many(
            "INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)",
            [(j[0], j[9], NOW, None if n % 2 else "détail") for n, j in enumerate(jobs) for _ in range(2)],
        )
        ledger = [(j[0], j[1], "reserve", j[13], NOW) for j in jobs]
        ledger += [(j[0], j[1], "settle", j[13] // 2, NOW) for j in jobs if j[9] == "delivered"]
        ledger += [(j[0], j[1], "release", j[13], NOW) for j in jobs if j[9] in ("failed", "canceled")]
        await tx.execute_many("INSERT INTO ledger (job_id, guild_id, kind, amount, at) VALUES (?,?,?,?,?)", ledger)
        await tx.execute_many(
            "INSERT INTO guild_policies (guild_id, daily_budget, allowed_channels, paused) VALUES (?, ?, ?, ?)",
            [(g, 10_000 * g, "[1, 2]", g % 2) for g in GUILDS],
        )
        await tx.execute("INSERT INTO meta (key, value) VALUES ('pause', 'maintenance')")
        await tx.execute(
            "INSERT INTO provider_keys (account, api_key_id, learned_at) VALUES ('main', 'key-1', ?)", (NOW,)
        )
        await tx.execute_many(
            "INSERT INTO job_tasks (task_id, job_id, at) VALUES (?, ?, ?)",
            [(j[12], j[0], NOW) for j in jobs if j[12] is not None],
        )
        # A deleted event: SQLite's AUTOINCREMENT never reuses its id, PostgreSQL must not either.
        await tx.execute("INSERT INTO job_events (job_id, state, at) VALUES (1, 'queued', ?)", (NOW,))
        await tx.execute("DELETE FROM job_events WHERE id = (SELECT MAX(id) FROM job_events)")
    counts = {}
    # Every table the migrations make, later ones included (read from the file, as migrate-db does).
    tables = await db.fetch_all("SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'")
    for (table,) in tables:
        row = await db.fetch_one(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - names from sqlite_master
        assert row is not None
        counts[table] = int(row[0])
    await db.close()
    return counts


async def test_copy_every_table_and_verify(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "kf2v.sqlite3"
    counts = await _make_source(source)

    result = await copy_sqlite_to_postgres(source, postgres_url)

    assert result.schema_version == latest_version("postgresql")
    assert result.rows == counts
    assert all(counts[t] > 0 for t in ("jobs", "job_events", "ledger", "guild_policies", "meta", "provider_keys"))
    assert result.ledger_guilds == len(GUILDS)
    target = await PostgresDatabase.open(postgres_url, max_connections=2)
    try:
        src = sqlite3.connect(source)
        for table, order in (("jobs", "id"), ("job_events", "id"), ("ledger", "id"), ("job_tasks", "task_id")):
            query = f"SELECT * FROM {table} ORDER BY {order}"  # noqa: S608 - fixed names
            expected = [tuple(r) for r in src.execute(query)]
            got = [tuple(r) for r in await target.fetch_all(query)]
            assert got == expected, table
        src_sums = dict(src.execute("SELECT guild_id, SUM(amount) FROM ledger WHERE kind='reserve' GROUP BY guild_id"))
        rows = await target.fetch_all("SELECT guild_id, SUM(amount) FROM ledger WHERE kind='reserve' GROUP BY guild_id")
        assert {int(g): int(s) for g, s in rows} == src_sums
        highest_event = src.execute("SELECT seq FROM sqlite_sequence WHERE name = 'job_events'").fetchone()[0]
        src.close()
        # New rows continue after the largest id SQLite ever handed out, deleted ones included.
        async with target.transaction() as tx:
            new = await tx.fetch_one(
                "INSERT INTO job_events (job_id, state, at) VALUES (1, 'queued', ?) RETURNING id", (NOW,)
            )
            job = await tx.fetch_one(
                """INSERT INTO jobs (guild_id, channel_id, user_id, model, resolution, prompt, first_frame, state,
                   queue_seq, cost_reserved, charge_state, period_day, period_month, created_at, updated_at)
                   VALUES (1, 1, 1, 'm', '480P', 'p', 'f', 'queued', 99, 0, 'reserved', 'd', 'm', ?, ?) RETURNING id""",
                (NOW, NOW),
            )
        assert new is not None and int(new[0]) == highest_event + 1
        assert job is not None and int(job[0]) == counts["jobs"] + 1
    finally:
        await target.close()


async def test_refuses_a_non_empty_target(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "kf2v.sqlite3"
    await _make_source(source)
    await copy_sqlite_to_postgres(source, postgres_url)
    with pytest.raises(CopyRefused, match="not empty"):
        await copy_sqlite_to_postgres(source, postgres_url)


async def test_refuses_a_foreign_database(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "kf2v.sqlite3"
    await _make_source(source)
    conn = await asyncpg.connect(postgres_url)
    await conn.execute("CREATE TABLE invoices (id BIGINT)")
    await conn.close()
    with pytest.raises(CopyRefused, match="invoices"):
        await copy_sqlite_to_postgres(source, postgres_url)


async def test_refuses_while_the_bot_has_the_file_open(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "kf2v.sqlite3"
    await _make_source(source)
    # Another process holding the file open, idle, as a running bot's connection does.
    hold_open = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode=WAL'); "
        "c.execute('SELECT COUNT(*) FROM jobs').fetchall(); print('open', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(  # noqa: S603, ASYNC220 - our own interpreter; the test waits for it on purpose
        [sys.executable, "-c", hold_open, str(source)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(CopyRefused, match="in use by another process"):
            await copy_sqlite_to_postgres(source, postgres_url)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
    target = await PostgresDatabase.open(postgres_url, max_connections=1)
    try:
        tables = await target.fetch_all("SELECT table_name FROM information_schema.tables WHERE table_name = 'jobs'")
        assert tables == []  # nothing was written
    finally:
        await target.close()
    result = await copy_sqlite_to_postgres(source, postgres_url)  # once stopped, it goes through
    assert result.rows["jobs"] == 40


async def test_a_table_without_a_postgresql_twin_is_refused_and_rolled_back(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "kf2v.sqlite3"
    await _make_source(source)
    src = sqlite3.connect(source)
    src.execute("CREATE TABLE only_in_sqlite (id INTEGER PRIMARY KEY, title TEXT)")
    src.commit()
    src.close()
    with pytest.raises(CopyRefused, match="schemas differ"):
        await copy_sqlite_to_postgres(source, postgres_url)


def test_cli_copies_and_never_prints_the_password(tmp_path: Path, postgres_url: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    asyncio.run(_make_source(data / "kf2v.sqlite3"))
    url_with_password = postgres_url.replace("postgres@", "postgres:hunter2secret@")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF2V_")}
    env["KF2V_DATA_DIR"] = str(data)
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bot", "migrate-db", "--to", url_with_password],
        env=env, capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[3],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "row counts match" in done.stdout and "40 jobs" in done.stdout
    assert "hunter2secret" not in done.stdout + done.stderr
    again = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bot", "migrate-db", "--to", url_with_password],
        env=env, capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[3],
    )  # fmt: skip
    assert again.returncode == 1 and "not empty" in again.stderr
    assert "hunter2secret" not in again.stdout + again.stderr
