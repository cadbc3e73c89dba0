"""The meta table: small operator state kept across restarts (the synced command tree's hash, the owners' pauses).

Owns the table meta. A pause change is announced on PAUSE_CHANNEL so other processes' dispatchers reload it.
"""

from __future__ import annotations

import json

from bot.jobs.models import Pause, PauseScope
from bot.jobs.store.common import StoreBase, iso, required_dt, utcnow

TABLES = frozenset({"meta"})
USES: frozenset[str] = frozenset()
PAUSE_CHANNEL = "kf2v_pauses"  # the owners' pauses (everything, a guild) changed; the payload is the origin
_OLD_PAUSE_KEY = "paused"  # the owners' global pause before pauses had scopes: its reason only


def _pause_key(scope: PauseScope, target: str) -> str:
    return f"pause:{scope.value}:{target}"


class MetaStore(StoreBase):
    """Key-value operator state and the persisted pauses."""

    # --- meta ----------------------------------------------------------------------------------------
    async def get_meta(self, key: str) -> str | None:
        """A value of the meta table; None when unset."""
        row = await self._db.fetch_one("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row[0]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        """Set (insert or replace) a value of the meta table."""
        async with self._db.transaction() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # --- pauses (kept in meta: of everything, of a guild, of an account) -----------------------------------
    async def pauses(self) -> list[Pause]:
        """The persisted pauses (every scope), including the pre-issue-11 global pause."""
        found: list[Pause] = []
        rows = await self._db.fetch_all(
            "SELECT key, value FROM meta WHERE key LIKE 'pause:%' OR key = ?", (_OLD_PAUSE_KEY,)
        )
        for key, value in rows:
            if key == _OLD_PAUSE_KEY:
                if value:  # a reason with no time: paused since an unknown moment, shown as now
                    found.append(Pause(PauseScope.ALL, "", str(value), utcnow()))
                continue
            data = json.loads(value)
            found.append(
                Pause(PauseScope(data["scope"]), str(data["target"]), str(data["reason"]), required_dt(data["since"]))
            )
        return found

    async def save_pause(self, pause: Pause) -> None:
        """Persist a pause (replacing one of the same scope and target)."""
        value = json.dumps({"scope": pause.scope.value, "target": pause.target, "reason": pause.reason,
                            "since": iso(pause.since)})  # fmt: skip
        async with self._db.transaction() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (_pause_key(pause.scope, pause.target), value),
            )
            db.notify(PAUSE_CHANNEL, self.origin)  # other processes' dispatchers reload the pauses

    async def delete_pause(self, scope: PauseScope, target: str) -> None:
        """Forget a persisted pause (no error when there was none)."""
        async with self._db.transaction() as db:
            keys = (_pause_key(scope, target), _OLD_PAUSE_KEY if scope is PauseScope.ALL else "")
            await db.execute("DELETE FROM meta WHERE key IN (?, ?)", keys)
            db.notify(PAUSE_CHANNEL, self.origin)
