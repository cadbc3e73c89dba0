"""The job store's database layer: one interface, SQLite (default) or PostgreSQL (KF2V_DATABASE_URL).

`open_database(settings)` opens the engine the settings select and applies the pending migrations.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Protocol

import asyncpg

from bot.jobs.db.base import (
    Database,
    DatabaseError,
    Dialect,
    LeaseLost,
    NotifyCallback,
    Row,
    Transaction,
    TransientConflict,
)
from bot.jobs.db.migrate import latest_version, migrate, schema_version
from bot.jobs.db.postgres import PostgresDatabase
from bot.jobs.db.sql import is_postgresql_url, redact_url
from bot.jobs.db.sqlite import SqliteDatabase


def is_database_fault(exc: BaseException) -> bool:
    """Whether `exc` came from the database or the way to it (a locked or unreadable SQLite file, a PostgreSQL
    connection cut, refused or timed out, any server error). Every such error is treated as transient: the
    caller retries with back-off for as long as it lasts. `LeaseLost` is not a fault but a verdict."""
    if isinstance(exc, LeaseLost):
        return False
    return isinstance(
        exc,
        DatabaseError
        | sqlite3.Error
        | asyncpg.PostgresError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | OSError
        | TimeoutError,
    )


class DatabaseSettings(Protocol):
    """What `open_database` reads (bot.settings.Settings has both)."""

    @property
    def database_url(self) -> str | None:
        """The PostgreSQL URL (KF2V_DATABASE_URL), or None for SQLite."""

    @property
    def database_path(self) -> Path:
        """The SQLite file used when no database URL is set."""


async def open_database(settings: DatabaseSettings, *, run_migrations: bool = True) -> Database:
    """PostgreSQL when KF2V_DATABASE_URL is set, else the SQLite file in KF2V_DATA_DIR; migrated."""
    url = settings.database_url
    db: Database
    if url:
        if not is_postgresql_url(url):
            raise DatabaseError(f"KF2V_DATABASE_URL {redact_url(url)} is not a postgresql:// URL")
        db = await PostgresDatabase.open(url)
    else:
        db = await SqliteDatabase.open(settings.database_path)
    if run_migrations:
        try:
            await migrate(db)
        except BaseException:
            await db.close()
            raise
    return db


__all__ = [
    "Database",
    "DatabaseError",
    "DatabaseSettings",
    "Dialect",
    "LeaseLost",
    "NotifyCallback",
    "PostgresDatabase",
    "Row",
    "SqliteDatabase",
    "Transaction",
    "TransientConflict",
    "is_database_fault",
    "latest_version",
    "migrate",
    "open_database",
    "redact_url",
    "schema_version",
]
