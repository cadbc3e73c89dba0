"""What every aggregate of the store shares: the clock, value conversions, the error, the guild lock's key and
the base class holding the `Database`. It owns no table and imports no aggregate module.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from bot.jobs.db import Database, Row
from bot.jobs.models import GuildPolicy


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what the store writes)."""
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """A time as the store writes it (UTC ISO 8601, microseconds); None stays None."""
    return value.astimezone(UTC).isoformat(timespec="microseconds") if value is not None else None


def dt(value: str | None) -> datetime | None:
    """A stored time read back; None (or empty) stays None."""
    return datetime.fromisoformat(value) if value else None


def required_dt(value: str) -> datetime:
    """A stored time of a NOT NULL column read back."""
    return datetime.fromisoformat(value)


def db_value(value: Any) -> Any:
    """A Python value as a column value on both engines (times as ISO text, booleans as 0/1)."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, bool):
        return int(value)
    return value


class StoreError(RuntimeError):
    """The database is not in the shape this code expects (a bug or a damaged file)."""


class StoreBase:
    """An aggregate's statements run on the `Database` given (the JobStore composes them over one)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Tags this store's notifications (jobs, pauses) so a process can tell its own changes from others'.
        self.origin = secrets.token_hex(6)


def guild_lock(guild_id: int) -> str:
    """The guild's lock: admissions and policy changes take it, so a change never lands mid-admission."""
    return f"guild:{guild_id}"


# The guild_policies row (owned by rules.py) is also read by the admission's usage statement (money.py): both
# turn its columns into a GuildPolicy here.
def policy_from(guild_id: int, row: Row | None) -> GuildPolicy:
    """A guild_policies row (or the same columns of a join); None: the defaults apply."""
    if row is None:
        return GuildPolicy(guild_id=guild_id)
    return GuildPolicy(
        guild_id=guild_id,
        daily_budget=row["daily_budget"],
        monthly_budget=row["monthly_budget"],
        member_daily_videos=row["member_daily_videos"],
        user_queue_limit=row["user_queue_limit"],
        allowed_channels=tuple(int(c) for c in json.loads(row["allowed_channels"])),
        paused=bool(row["paused"]),
    )
