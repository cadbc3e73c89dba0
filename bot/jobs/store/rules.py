"""Rules and policies: what a guild allows. Content rules (issue 13: banned phrases per guild; DEFAULT_SCOPE, 0,
holds the owners' default list) and each guild's policy (budgets, member limits, allowed channels, paused).

Owns the tables content_rules, content_rule_versions, content_rule_refusals and guild_policies. The admission
reads guild_policies too, joined to its usage sums in one statement (money.py), under the same guild lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bot.jobs.db import Database, Transaction
from bot.jobs.models import GuildPolicy
from bot.jobs.rules import DEFAULT_SCOPE, ContentRule, RuleChange
from bot.jobs.store.common import StoreBase, guild_lock, iso, policy_from, utcnow

TABLES = frozenset({"content_rules", "content_rule_versions", "content_rule_refusals", "guild_policies"})
USES: frozenset[str] = frozenset()

# Turns a guild's allowed channels into new ones (inside the policy transaction).
ChannelEdit = Callable[[tuple[int, ...]], tuple[int, ...]]
_POLICY_COLUMNS = frozenset(
    {"daily_budget", "monthly_budget", "member_daily_videos", "user_queue_limit", "allowed_channels", "paused"}
)


class RulesStore(StoreBase):
    """The content rules and the guild policies."""

    # --- guild policies ------------------------------------------------------------------------------
    async def get_policy(self, guild_id: int) -> GuildPolicy:
        """The guild's stored policy; one with no values of its own (the defaults apply) when none is stored."""
        return await self._policy(self._db, guild_id)

    async def save_policy(self, policy: GuildPolicy) -> GuildPolicy:
        """Write every column of `policy` (a whole new policy; to change some fields, `update_policy`)."""
        return await self.update_policy(
            policy.guild_id,
            daily_budget=policy.daily_budget,
            monthly_budget=policy.monthly_budget,
            member_daily_videos=policy.member_daily_videos,
            user_queue_limit=policy.user_queue_limit,
            allowed_channels=policy.allowed_channels,
            paused=policy.paused,
        )

    async def update_policy(
        self,
        guild_id: int,
        /,
        *,
        edit_channels: ChannelEdit | None = None,
        **columns: Any,
    ) -> GuildPolicy:
        """Set only the given columns, in one transaction, and return the policy as it now stands.

        Column-level on purpose: an owner's budget change and a manager's member limits, made at the same
        moment, both stay (a read-modify-write of the whole row would let the later one revert the other).
        `edit_channels` turns the allowed channels into new ones inside the same transaction (two managers
        allowing a channel each keep both); whatever it raises leaves the policy untouched.
        """
        unknown = set(columns) - _POLICY_COLUMNS
        if unknown:
            raise ValueError(f"not guild policy columns: {sorted(unknown)}")
        async with self._db.transaction() as db:
            await db.lock(guild_lock(guild_id))  # the admissions' key: a change never lands mid-admission
            await db.execute("INSERT INTO guild_policies (guild_id) VALUES (?) ON CONFLICT DO NOTHING", (guild_id,))
            if edit_channels is not None:
                columns["allowed_channels"] = edit_channels((await self._policy(db, guild_id)).allowed_channels)
            values = {name: _policy_db_value(name, value) for name, value in columns.items()}
            if values:
                # Column names were checked against _POLICY_COLUMNS above, never taken from users.
                assignments = ", ".join(f"{name} = ?" for name in values)
                await db.execute(
                    f"UPDATE guild_policies SET {assignments} WHERE guild_id = ?",  # noqa: S608
                    (*values.values(), guild_id),
                )
            return await self._policy(db, guild_id)

    # --- content rules (issue 13): banned phrases per guild; DEFAULT_SCOPE (0) holds the owners' default ----
    async def content_rules(self, *guild_ids: int) -> list[ContentRule]:
        """The rules of the given scopes, oldest first within each scope, in the order the scopes are given."""
        if not guild_ids:
            return []
        marks = ", ".join("?" for _ in guild_ids)
        rows = await self._db.fetch_all(
            f"SELECT guild_id, phrase FROM content_rules WHERE guild_id IN ({marks})"  # noqa: S608 (only `?` marks)
            " ORDER BY added_at, phrase_key",
            tuple(guild_ids),
        )
        order = {guild_id: i for i, guild_id in enumerate(guild_ids)}
        rules = [ContentRule(str(r["phrase"]), int(r["guild_id"])) for r in rows]
        return sorted(rules, key=lambda rule: order[rule.guild_id])  # stable: keeps the age order per scope

    async def content_rule_versions(self, guild_id: int) -> tuple[int, int]:
        """(this guild's list version, the default list's version): 0 for a list never changed."""
        rows = await self._db.fetch_all(
            "SELECT guild_id, version FROM content_rule_versions WHERE guild_id IN (?, ?)", (guild_id, DEFAULT_SCOPE)
        )
        versions = {int(r["guild_id"]): int(r["version"]) for r in rows}
        return versions.get(guild_id, 0), versions.get(DEFAULT_SCOPE, 0)

    async def add_content_rule(
        self, guild_id: int, key: str, phrase: str, added_by: int, *, limit: int, now: datetime | None = None
    ) -> tuple[RuleChange, ContentRule, int]:
        """Add a rule unless one with the same `key` exists or the scope holds `limit` rules already.

        Returns (what happened, the rule now in the list under that key, how many rules the scope holds).
        """
        async with self._db.transaction() as db:
            await db.lock(_rules_lock(guild_id))  # count-then-insert: two managers can't both take the last place
            existing = await db.fetch_one(
                "SELECT phrase FROM content_rules WHERE guild_id = ? AND phrase_key = ?", (guild_id, key)
            )
            count_row = await db.fetch_one("SELECT COUNT(*) FROM content_rules WHERE guild_id = ?", (guild_id,))
            count = int(count_row[0]) if count_row else 0
            if existing is not None:
                return RuleChange.EXISTS, ContentRule(str(existing["phrase"]), guild_id), count
            if count >= limit:
                return RuleChange.FULL, ContentRule(phrase, guild_id), count
            await db.execute(
                "INSERT INTO content_rules (guild_id, phrase_key, phrase, added_by, added_at) VALUES (?, ?, ?, ?, ?)",
                (guild_id, key, phrase, added_by, iso(now or utcnow())),
            )
            await self._bump_rules_version(db, guild_id)
            return RuleChange.DONE, ContentRule(phrase, guild_id), count + 1

    async def remove_content_rule(self, guild_id: int, key: str) -> ContentRule | None:
        """Remove the rule stored under `key`; the removed rule, or None when there was none."""
        async with self._db.transaction() as db:
            await db.lock(_rules_lock(guild_id))
            row = await db.fetch_one(
                "SELECT phrase FROM content_rules WHERE guild_id = ? AND phrase_key = ?", (guild_id, key)
            )
            if row is None:
                return None
            await db.execute("DELETE FROM content_rules WHERE guild_id = ? AND phrase_key = ?", (guild_id, key))
            await self._bump_rules_version(db, guild_id)
            return ContentRule(str(row["phrase"]), guild_id)

    async def count_rule_refusal(self, guild_id: int, period_month: str) -> None:
        """Count one prompt refused by a content rule in the guild this month."""
        async with self._db.transaction() as db:
            await db.execute(
                "INSERT INTO content_rule_refusals (guild_id, month, refusals) VALUES (?, ?, 1)"
                " ON CONFLICT (guild_id, month) DO UPDATE SET refusals = content_rule_refusals.refusals + 1",
                (guild_id, period_month),
            )

    async def rules_summary(self, guild_id: int, period_month: str) -> tuple[int, int, int]:
        """(the guild's own rules, the default rules, prompts refused by a rule in the guild this month)."""
        rows = await self._db.fetch_all(
            "SELECT guild_id, COUNT(*) FROM content_rules WHERE guild_id IN (?, ?) GROUP BY guild_id",
            (guild_id, DEFAULT_SCOPE),
        )
        counts = {int(r[0]): int(r[1]) for r in rows}
        refused = await self._db.fetch_one(
            "SELECT refusals FROM content_rule_refusals WHERE guild_id = ? AND month = ?", (guild_id, period_month)
        )
        return counts.get(guild_id, 0), counts.get(DEFAULT_SCOPE, 0), int(refused[0]) if refused else 0

    @staticmethod
    async def _bump_rules_version(db: Transaction, guild_id: int) -> None:
        await db.execute(
            "INSERT INTO content_rule_versions (guild_id, version) VALUES (?, 1)"
            " ON CONFLICT (guild_id) DO UPDATE SET version = content_rule_versions.version + 1",
            (guild_id,),
        )

    @staticmethod
    async def _policy(db: Transaction | Database, guild_id: int) -> GuildPolicy:
        row = await db.fetch_one("SELECT * FROM guild_policies WHERE guild_id = ?", (guild_id,))
        return policy_from(guild_id, row)


def _rules_lock(guild_id: int) -> str:
    return f"content_rules:{guild_id}"


def _policy_db_value(name: str, value: Any) -> Any:
    if name == "allowed_channels":
        return json.dumps([int(c) for c in value])
    if name == "paused":
        return int(bool(value))
    return value
