"""Numbered migrations for both engines: the same steps, one transaction each, the version recorded with it.

SQLite runs `bot/jobs/migrations/NNNN_*.sql` and records the version in PRAGMA user_version (as `check` and
`backup` read it); PostgreSQL runs the twins in `bot/jobs/migrations/postgresql/` and records it in
`kf2v_schema_version`, under an advisory lock so processes starting together apply each step once.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from bot.jobs.db.base import Database, DatabaseError, Dialect, Transaction

MIGRATIONS_PACKAGE = "bot.jobs.migrations"
_LOCK = "schema"  # the same key PostgresDatabase.open takes for its bookkeeping tables


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file of the engine's migration folder."""

    version: int
    name: str
    sql: str


def _folder(dialect: Dialect) -> Traversable:
    root = resources.files(MIGRATIONS_PACKAGE)
    return root if dialect == "sqlite" else root.joinpath("postgresql")


def migrations(dialect: Dialect) -> list[Migration]:
    """The engine's migrations in version order (the number before the file name's first `_`)."""
    files = [f for f in _folder(dialect).iterdir() if f.is_file() and f.name.endswith(".sql")]
    steps = [Migration(int(f.name.split("_", 1)[0]), f.name, f.read_text(encoding="utf-8")) for f in files]
    steps.sort(key=lambda m: m.version)
    versions = [m.version for m in steps]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"two {dialect} migrations share a number: {[m.name for m in steps]}")
    return steps


async def schema_version(db: Database | Transaction) -> int:
    """The number of the last migration applied to this database (0 when none)."""
    if db.dialect == "sqlite":
        row = await db.fetch_one("PRAGMA user_version")
        return int(row[0]) if row else 0
    row = await db.fetch_one("SELECT MAX(version) FROM kf2v_schema_version")
    return int(row[0]) if row and row[0] is not None else 0


async def _record(tx: Transaction, version: int) -> None:
    if tx.dialect == "sqlite":
        await tx.execute(f"PRAGMA user_version = {version:d}")  # PRAGMA takes no parameters
    else:
        await tx.execute("DELETE FROM kf2v_schema_version")
        await tx.execute("INSERT INTO kf2v_schema_version (version) VALUES (?)", (version,))


async def migrate(db: Database) -> int:
    """Apply every pending step, each in its own transaction; returns the schema version reached.

    A crash between steps leaves the database at the last whole step. A database newer than this code is
    left alone (the caller decides whether to refuse it).
    """
    for step in migrations(db.dialect):
        if step.version <= await schema_version(db):
            continue
        async with db.transaction() as tx:
            await tx.lock(_LOCK)
            if step.version <= await schema_version(tx):  # another process applied it meanwhile
                continue
            await tx.execute_script(step.sql)
            await _record(tx, step.version)
    return await schema_version(db)


def latest_version(dialect: Dialect = "sqlite") -> int:
    """The newest migration number this code ships for `dialect` (0 when none)."""
    return max((m.version for m in migrations(dialect)), default=0)


# Tables the engines keep for themselves, outside the numbered migrations.
BOOKKEEPING_TABLES = frozenset({"kf2v_schema_version", "kf2v_leases", "sqlite_sequence"})


async def describe_schema(db: Database) -> dict[str, tuple[str, ...]]:
    """Table -> column names in order, of the job schema (both engines): for parity checks and copies."""
    if db.dialect == "sqlite":
        tables = await db.fetch_all("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        names = [str(t[0]) for t in tables if str(t[0]) not in BOOKKEEPING_TABLES]
        out = {}
        for name in names:
            columns = await db.fetch_all("SELECT name FROM pragma_table_info(?) ORDER BY cid", (name,))
            out[name] = tuple(str(c[0]) for c in columns)
        return out
    rows = await db.fetch_all(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"""
    )
    described: dict[str, list[str]] = {}
    for table, column in rows:
        if table not in BOOKKEEPING_TABLES:
            described.setdefault(str(table), []).append(str(column))
    return {table: tuple(columns) for table, columns in sorted(described.items())}


async def describe_indexes(db: Database) -> set[str]:
    """Names of the indexes created by the migrations (not the ones engines make for keys)."""
    if db.dialect == "sqlite":
        rows = await db.fetch_all("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    else:
        rows = await db.fetch_all(
            """SELECT i.indexname FROM pg_indexes AS i WHERE i.schemaname = current_schema()
               AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conname = i.indexname)"""
        )
    return {str(r[0]) for r in rows}
