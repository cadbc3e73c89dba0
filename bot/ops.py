"""Operator commands: check and backup. (Filled in with the operations work.)"""

from __future__ import annotations

import sys

from bot.settings import Settings


async def run_check(settings: Settings) -> int:
    print("kf2v-bot check: not built yet.", file=sys.stderr)
    return 1


async def run_backup(settings: Settings, path: str) -> int:
    print("kf2v-bot backup: not built yet.", file=sys.stderr)
    return 1
