"""`kf2v-bot migrate-db --to postgresql://…`: move a stopped install's SQLite database into PostgreSQL.

The copy is generic over the schema: it copies every table the migrations created (read from the SQLite
file itself, so a table added by a later migration is copied without touching this module), in foreign-key
order, rows in primary-key order. Everything is written in ONE PostgreSQL transaction and verified inside
it before the commit (row count per table, ledger sums per guild and kind): a failed or interrupted copy
leaves the target as empty as it found it, so it can simply be run again.

Refusals, each with a message for the operator and nothing written:
- the SQLite file is open in another process (the bot is running): checked by switching the file out of WAL
  mode, which SQLite refuses while any other connection has it open, idle or not; the file then stays
  exclusively locked until the copy ends, so a bot started meanwhile fails to open it instead of writing
  rows the copy would miss;
- the PostgreSQL database holds data (any row in a job table) or tables this schema doesn't know;
- the two schemas differ after both are migrated (a PostgreSQL twin of a migration is missing).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bot.jobs.db.base import Database, DatabaseError, Transaction
from bot.jobs.db.migrate import BOOKKEEPING_TABLES, describe_schema, latest_version, migrate, schema_version
from bot.jobs.db.postgres import PostgresDatabase
from bot.jobs.db.sql import is_postgresql_url, redact_url
from bot.jobs.db.sqlite import SqliteDatabase

BATCH_ROWS = 500
# The money trail is compared sum for sum, not only row for row.
LEDGER_TABLE = "ledger"
LEDGER_SUMS = "SELECT guild_id, kind, SUM(amount) FROM ledger GROUP BY guild_id, kind"


class CopyRefused(DatabaseError):
    """The copy did not start (or was rolled back): why, phrased for the operator."""


@dataclass
class CopyResult:
    """What a database copy moved, and the checks that the target holds the same."""

    schema_version: int
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows copied (and found in the target)
    ledger_guilds: int = 0  # guilds whose ledger sums matched
    seconds: float = 0.0


# --- the source: the SQLite file, held exclusively -----------------------------------------------------
@contextmanager
def exclusive_sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    """The SQLite file opened by us alone, for reading, until the block ends; CopyRefused if the bot has it."""
    if not path.is_file():
        raise CopyRefused(f"no SQLite database at {path} (KF2V_DATA_DIR)")
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        try:
            # Leaving WAL needs every other connection closed: the reliable "is the bot running" test.
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as exc:
            raise CopyRefused(
                f"{path} is in use by another process ({exc}): stop every kf2v-bot using it, then run migrate-db again"
            ) from exc
        yield conn
        conn.execute("ROLLBACK")  # we only read
    finally:
        try:
            # Back to the mode the bot runs in, for whoever opens the file next (a rollback to SQLite).
            conn.execute("PRAGMA locking_mode=NORMAL")
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error:
            pass  # the bot sets WAL itself on open
        conn.close()


def sqlite_tables_in_copy_order(conn: sqlite3.Connection) -> list[str]:
    """Every table of the job schema, parents before the tables whose foreign keys point at them."""
    names = [
        str(r[0])
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        if str(r[0]) not in BOOKKEEPING_TABLES and not str(r[0]).startswith("sqlite_")
    ]
    parents = {
        name: {str(fk[2]) for fk in conn.execute("SELECT * FROM pragma_foreign_key_list(?)", (name,))} - {name}
        for name in names
    }
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and parents[n] <= set(ordered)]
        if not ready:  # a cycle between tables: no order satisfies immediate foreign keys
            raise CopyRefused(f"foreign keys form a cycle among {sorted(set(names) - set(ordered))}")
        ordered.extend(ready)
    return ordered


def _order_by(conn: sqlite3.Connection, table: str) -> str:
    """Primary-key order (a row referring to an older row of its own table comes after it), else rowid."""
    keys = sorted((int(c[5]), str(c[1])) for c in conn.execute("SELECT * FROM pragma_table_info(?)", (table,)))
    columns = [name for position, name in keys if position > 0]
    return ", ".join(_quote(c) for c in columns) if columns else "rowid"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


# --- the target ----------------------------------------------------------------------------------------
Coerce = Callable[[Any], Any]


def _coercer(pg_type: str) -> Coerce | None:
    """SQLite stores booleans as 0/1 and may keep an integer in a REAL column; asyncpg wants exact types."""
    if pg_type == "boolean":
        return lambda v: None if v is None else bool(v)
    if pg_type in ("double precision", "real", "numeric"):
        return lambda v: None if v is None else float(v)
    if pg_type == "text":  # SQLite's type affinity may have kept a number in a TEXT column
        return lambda v: v if v is None or isinstance(v, str) else str(v)
    return None


async def _target_column_types(tx: Transaction) -> dict[str, dict[str, str]]:
    rows = await tx.fetch_all(
        """SELECT table_name, column_name, data_type FROM information_schema.columns
           WHERE table_schema = current_schema()"""
    )
    types: dict[str, dict[str, str]] = {}
    for table, column, data_type in rows:
        types.setdefault(str(table), {})[str(column)] = str(data_type)
    return types


async def check_target_empty(target: Database) -> None:
    """No rows in any table of the target's schema (bookkeeping tables aside)."""
    existing = await describe_schema(target)
    for table in existing:
        row = await target.fetch_one(f"SELECT COUNT(*) FROM {_quote(table)}")  # noqa: S608 - quoted names from the schema
        if row is not None and int(row[0]) > 0:
            raise CopyRefused(
                f"the PostgreSQL database is not empty (table {table} has {int(row[0])} rows): "
                "migrate-db only copies into an empty database"
            )


async def _reset_identities(tx: Transaction, high_water: dict[str, int]) -> None:
    """Identity columns restart after the largest id ever handed out (SQLite's sqlite_sequence included)."""
    rows = await tx.fetch_all(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')"""
    )
    for table, column in rows:
        table, column = str(table), str(column)
        top = await tx.fetch_one(f"SELECT MAX({_quote(column)}) FROM {_quote(table)}")  # noqa: S608 - quoted names from the schema
        highest = max(int(top[0]) if top and top[0] is not None else 0, high_water.get(table, 0))
        if highest > 0:
            await tx.fetch_one("SELECT setval(pg_get_serial_sequence(?, ?), ?)", (_quote(table), column, highest))


def _ledger_sums_sqlite(conn: sqlite3.Connection) -> dict[tuple[int, str], int]:
    rows = conn.execute(LEDGER_SUMS)
    return {(int(g), str(k)): int(s) for g, k, s in rows}


async def _ledger_sums_target(tx: Transaction) -> dict[tuple[int, str], int]:
    rows = await tx.fetch_all(LEDGER_SUMS)
    return {(int(g), str(k)): int(s) for g, k, s in rows}  # SUM(BIGINT) is a Decimal on PostgreSQL


async def copy_sqlite_to_postgres(sqlite_path: Path, url: str) -> CopyResult:
    """Copy `sqlite_path` into the empty PostgreSQL database at `url`; see the module docstring."""
    if not is_postgresql_url(url):
        raise CopyRefused(f"--to {redact_url(url)} is not a postgresql:// URL")
    started = time.monotonic()
    # Bring the source to this release's schema first, as `run` would; refused if the bot holds it.
    with exclusive_sqlite(sqlite_path):
        pass
    source_db = await SqliteDatabase.open(sqlite_path)
    try:
        version = await migrate(source_db)
    finally:
        await source_db.close()
    if version != latest_version("sqlite"):
        raise CopyRefused(f"{sqlite_path} is at schema version {version}, newer than this release knows")

    try:
        target = await PostgresDatabase.open(url, max_connections=2)
    except (OSError, DatabaseError) as exc:
        raise CopyRefused(f"cannot open {redact_url(url)}: {exc}") from exc
    except Exception as exc:  # asyncpg's own errors (authentication, missing database)
        raise CopyRefused(f"cannot open {redact_url(url)}: {type(exc).__name__}: {exc}") from exc
    try:
        with exclusive_sqlite(sqlite_path) as source:
            tables = sqlite_tables_in_copy_order(source)
            await check_target_empty(target)
            foreign = set(await describe_schema(target)) - set(tables)
            if foreign:
                raise CopyRefused(f"the PostgreSQL database has tables kf2v-bot doesn't make: {sorted(foreign)}")
            await migrate(target)
            if await schema_version(target) != version:
                raise CopyRefused(f"PostgreSQL reached schema version {await schema_version(target)}, not {version}")
            target_schema = await describe_schema(target)
            source_schema = {t: _sqlite_columns(source, t) for t in tables}
            if {t: set(c) for t, c in target_schema.items()} != {t: set(c) for t, c in source_schema.items()}:
                raise CopyRefused(
                    f"the schemas differ after migrating both (SQLite {source_schema}, PostgreSQL {target_schema})"
                )
            try:
                return await _copy(source, target, tables, source_schema, version, started)
            except asyncpg.PostgresError as exc:
                raise CopyRefused(f"PostgreSQL refused a row ({type(exc).__name__}: {exc}); rolled back") from exc
    finally:
        await target.close()


def _sqlite_columns(conn: sqlite3.Connection, table: str) -> tuple[str, ...]:
    return tuple(str(c[1]) for c in conn.execute("SELECT * FROM pragma_table_info(?) ORDER BY cid", (table,)))


async def _copy(
    source: sqlite3.Connection,
    target: Database,
    tables: list[str],
    columns_of: dict[str, tuple[str, ...]],
    version: int,
    started: float,
) -> CopyResult:
    result = CopyResult(schema_version=version)
    high_water: dict[str, int] = {}
    if source.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        high_water = {str(n): int(s) for n, s in source.execute("SELECT name, seq FROM sqlite_sequence")}
    async with target.transaction() as tx:
        types = await _target_column_types(tx)
        for table in tables:
            columns = columns_of[table]
            coercers = [_coercer(types[table][c]) for c in columns]
            insert = (
                f"INSERT INTO {_quote(table)} ({', '.join(_quote(c) for c in columns)}) "  # noqa: S608 - quoted names from the schema
                f"VALUES ({', '.join('?' for _ in columns)})"
            )
            cursor = source.execute(
                f"SELECT {', '.join(_quote(c) for c in columns)} FROM {_quote(table)} "  # noqa: S608 - quoted names from the schema
                f"ORDER BY {_order_by(source, table)}"
            )
            copied = 0
            while batch := cursor.fetchmany(BATCH_ROWS):
                rows = [
                    tuple(
                        value if coerce is None else coerce(value) for value, coerce in zip(row, coercers, strict=True)
                    )
                    for row in batch
                ]
                await tx.execute_many(insert, rows)
                copied += len(rows)
            result.rows[table] = copied
        await _reset_identities(tx, high_water)
        # Verified before the commit: a mismatch rolls everything back and leaves the target empty.
        for table in tables:
            found = await tx.fetch_one(f"SELECT COUNT(*) FROM {_quote(table)}")  # noqa: S608 - quoted names from the schema
            count = int(found[0]) if found else -1
            if count != result.rows[table]:
                raise CopyRefused(
                    f"{table}: copied {result.rows[table]} rows but PostgreSQL counts {count}; rolled back"
                )
        if LEDGER_TABLE in tables:
            expected = _ledger_sums_sqlite(source)
            got = await _ledger_sums_target(tx)
            if expected != got:
                differing = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
                raise CopyRefused(f"ledger sums differ for (guild, kind) {differing[:10]}; rolled back")
            result.ledger_guilds = len({guild for guild, _kind in expected})
    result.seconds = time.monotonic() - started
    return result


def run_migrate_db(sqlite_path: Path, url: str) -> tuple[int, str]:
    """The CLI's work: (exit status, one line for the operator). Never prints the URL's password."""
    try:
        result = asyncio.run(copy_sqlite_to_postgres(sqlite_path, url))
    except CopyRefused as exc:
        return 1, f"kf2v-bot migrate-db: {exc}"
    counted = ", ".join(f"{n} {table}" for table, n in result.rows.items())
    return 0, (
        f"copied {sqlite_path} into {redact_url(url)} (schema version {result.schema_version}; {counted}); "
        f"row counts match, ledger sums match for {result.ledger_guilds} guilds, in {result.seconds:.1f}s. "
        f"Set KF2V_DATABASE_URL and start the bot."
    )
