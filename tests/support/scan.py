"""Where a person still appears: every column of every table of a database, the files under a folder, log lines.

Generic on purpose (issue 19): a table or column added later is scanned without anyone listing it, so a new
place that keeps a user id or a prompt makes the privacy tests fail until forgetting covers it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bot.jobs.db import Database


async def table_names(db: Database) -> list[str]:
    """Every table of the database (SQLite's own sqlite_* tables excluded)."""
    if db.dialect == "sqlite":
        rows = await db.fetch_all("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    else:
        rows = await db.fetch_all(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
    return sorted(str(r[0]) for r in rows)


async def rows_naming(db: Database, user_id: int, texts: Iterable[str]) -> list[str]:
    """`table.column = value` for every value that is the user id, or a text holding it or one of `texts`."""
    needles = [str(user_id), *(t for t in texts if t)]
    found: list[str] = []
    for table in await table_names(db):
        for row in await db.fetch_all(f'SELECT * FROM "{table}"'):  # noqa: S608 - names read from the catalog
            for column in row.keys():  # noqa: SIM118 - iterating a row gives its values, not its names
                value = row[column]
                if value == user_id or (isinstance(value, str) and any(n in value for n in needles)):
                    found.append(f"{table}.{column} = {value!r}")
    return found


def files_naming(folder: Path, needles: Iterable[bytes]) -> list[str]:
    """Files under `folder` whose name or bytes contain one of `needles`."""
    wanted = [n for n in needles if n]
    found: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(n in data or n in str(path.relative_to(folder)).encode() for n in wanted):
            found.append(str(path.relative_to(folder)))
    return found
