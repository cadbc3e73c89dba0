"""Stories: three to six keyframes become N-1 segment jobs joined into one video.

`frames` (Pillow) is importable everywhere; `join` needs PyAV (the `video` extra) and is imported only by the
story cog, which the app loads only when PyAV is installed. Nothing here imports `join`, so the package itself
never needs PyAV.
"""

from __future__ import annotations

import importlib.util


def stories_available() -> bool:
    """Whether PyAV (the `video` extra) is installed: the join needs it, and without it /kf2v-story is off."""
    return importlib.util.find_spec("av") is not None
