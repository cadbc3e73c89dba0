"""Files under the data dir: input frames (content-addressed) and finished videos.

Queued jobs must not depend on Discord's expiring attachment URLs and must not keep image bytes in
memory while they wait, so frames are written here when the job is accepted and read back at submit.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import datetime
from pathlib import Path

EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/bmp": "bmp",
    "image/webp": "webp",
    # the media family's driving audio and continued clips (issue 12), stored like frames
    "audio/wav": "wav",
    "audio/mpeg": "mp3",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
}
MIME_BY_EXTENSION = {ext: mime for mime, ext in EXTENSIONS.items()}


class MediaStore:
    """The media folder: keyframes by content hash (shared by jobs) and each job's downloaded video."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.frames = root / "frames"
        self.videos = root / "videos"
        for folder in (root, self.frames, self.videos):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    # --- frames --------------------------------------------------------------------------------------
    def put_frame(self, data: bytes, mime: str) -> tuple[str, bool]:
        """Store a frame; returns (reference, newly written). Same bytes -> same reference."""
        digest = hashlib.sha256(data).hexdigest()
        ref = f"{digest[:2]}/{digest}.{EXTENSIONS[mime]}"
        path = self.frames / ref
        if path.exists():
            return ref, False
        _atomic_write(path, data)
        return ref, True

    def frame_path(self, ref: str) -> Path:
        """The file of frame reference `ref`; `ValueError` if the reference points outside the frames folder."""
        path = (self.frames / ref).resolve()
        if self.frames.resolve() not in path.parents:
            raise ValueError(f"frame reference escapes the media folder: {ref!r}")
        return path

    def read_frame(self, ref: str) -> bytes:
        """The frame's bytes; `FileNotFoundError` once swept."""
        return self.frame_path(ref).read_bytes()

    @staticmethod
    def mime_of(ref: str) -> str:
        """The MIME type from the reference's extension; `KeyError` for an extension the store never writes."""
        return MIME_BY_EXTENSION[ref.rsplit(".", 1)[-1]]

    def remove_frame(self, ref: str) -> None:
        """Delete the frame's file; no error when it is already gone."""
        self.frame_path(ref).unlink(missing_ok=True)

    def sweep_frames(self, keep: set[str], older_than: datetime) -> int:
        """Remove frames no job needs any more (and that are older than the cut-off)."""
        removed = 0
        cutoff = older_than.timestamp()
        for path in self.frames.glob("*/*"):
            ref = f"{path.parent.name}/{path.name}"
            if ref not in keep and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # --- videos --------------------------------------------------------------------------------------
    def video_path(self, job_id: int) -> Path:
        """Where job `job_id`'s video is (or will be) downloaded."""
        return self.videos / f"job-{job_id}.mp4"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
