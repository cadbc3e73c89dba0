"""Keyframe normalisation for a story: every frame takes the first frame's size and aspect ratio, once, at admission.

The provider sizes a segment's output from its first frame; segments whose first frames differ in size or aspect
would come back at different resolutions and force a re-encode at the join (and a visible jump at the seams).
Cropping to the first frame's aspect (centred, like `ImageOps.fit`) then resizing to its size makes every
segment come back alike, so the join can remux.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

MIN_FRAMES = 3
MAX_FRAMES = 6


class FrameError(ValueError):
    """A keyframe that cannot be decoded; `index` is 0-based."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"frame {index + 1}: {reason}")
        self.index = index


@dataclass(frozen=True, slots=True)
class NormalisedFrame:
    """A keyframe ready to store: its bytes, type and (the first frame's) size."""

    data: bytes
    content_type: str
    width: int
    height: int
    changed: bool  # False: the user's bytes, untouched


def _open(data: bytes, index: int) -> Image.Image:
    try:
        opened = Image.open(io.BytesIO(data))
        opened.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise FrameError(index, f"cannot be decoded ({type(exc).__name__})") from None
    # Displayed orientation: what the user sees is what the sizes refer to.
    upright: Image.Image = ImageOps.exif_transpose(opened)
    return upright


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _encode(image: Image.Image, as_jpeg: bool) -> tuple[bytes, str]:
    out = io.BytesIO()
    if as_jpeg:
        image.save(out, format="JPEG", quality=95, subsampling=0)
        return out.getvalue(), "image/jpeg"
    image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue(), "image/png"


def normalise_frames(frames: Sequence[bytes]) -> list[NormalisedFrame]:
    """The first frame as it is; every other one centre-cropped to its aspect and resized to its size.

    A later frame already upright and of exactly that size is kept as it is. Re-encoded frames are JPEG
    (quality 95, no chroma subsampling) when the first frame is JPEG, otherwise PNG (lossless).
    Raises FrameError for a frame that is not an image, or a count outside 3..6.
    """
    if not MIN_FRAMES <= len(frames) <= MAX_FRAMES:
        raise ValueError(f"a story takes {MIN_FRAMES} to {MAX_FRAMES} frames, not {len(frames)}")
    first = _open(frames[0], 0)
    target = first.size
    first_is_jpeg = (first.format or "").upper() == "JPEG" or _is_jpeg(frames[0])
    result = [
        NormalisedFrame(
            frames[0], "image/jpeg" if first_is_jpeg else _mime(frames[0]), target[0], target[1], changed=False
        )
    ]
    for index, data in enumerate(frames[1:], start=1):
        image = _open(data, index)
        # Kept only when no EXIF rotation is pending: the provider may not apply it (unconfirmed).
        if image.size == target and _orientation(Image.open(io.BytesIO(data))) in (0, 1):
            result.append(NormalisedFrame(data, _mime(data), target[0], target[1], changed=False))
            continue
        fitted = ImageOps.fit(_flatten(image), target, Image.Resampling.LANCZOS, centering=(0.5, 0.5))
        encoded, mime = _encode(fitted, first_is_jpeg)
        result.append(NormalisedFrame(encoded, mime, target[0], target[1], changed=True))
    return result


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except (ValueError, TypeError, OSError):
        return 1


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def _mime(data: bytes) -> str:
    if _is_jpeg(data):
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"BM":
        return "image/bmp"
    return "application/octet-stream"
