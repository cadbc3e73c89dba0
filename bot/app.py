"""Builds everything once: settings -> database -> services -> VideoBot. (Wiring lands with the engine.)"""

from __future__ import annotations

import sys

from bot.settings import Settings


async def run_bot(settings: Settings) -> int:
    print("kf2v-bot run: the bot is not wired up yet.", file=sys.stderr)
    return 1
