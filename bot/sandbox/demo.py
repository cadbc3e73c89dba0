"""`kf2v-bot demo`. (Lands with the demo work.)"""

from __future__ import annotations

import sys


async def run_demo(time_scale: float | None, output: str) -> int:
    print("kf2v-bot demo: not built yet.", file=sys.stderr)
    return 1
