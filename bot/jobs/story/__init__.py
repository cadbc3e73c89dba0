"""Stories: three to six keyframes become N-1 segment jobs joined into one video.

`frames` (Pillow) is importable everywhere; `join` needs PyAV (the `video` extra) and is imported only by the
story cog, which the app loads only when PyAV is installed. Nothing here imports `join`, so the package itself
never needs PyAV.
"""
