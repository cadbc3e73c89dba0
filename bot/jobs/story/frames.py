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

from PIL import Image, UnidentifiedImageError

from bot.jobs.images import REDUCING_GAP, Hold, hold_nothing, orientation_transpose, pixel_bytes, resize_scratch

MIN_FRAMES = 3
MAX_FRAMES = 6


_SWAPS_SIDES = frozenset({5, 6, 7, 8})


class FrameError(ValueError):
    """A keyframe that cannot be decoded; `index` is 0-based."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"frame {index + 1}: {reason}")
        self.index = index


class FrameTooLarge(FrameError):
    """A later keyframe whose fit to the first frame's size would need more than the decode budget by itself."""

    def __init__(self, index: int, size: tuple[int, int], target: tuple[int, int]) -> None:
        super().__init__(index, f"{size[0]}x{size[1]} fitted to {target[0]}x{target[1]} is over the memory budget")
        self.size = size
        self.target = target


@dataclass(frozen=True, slots=True)
class NormalisedFrame:
    """A keyframe ready to store: its bytes, type and (the first frame's) size."""

    data: bytes
    content_type: str
    width: int
    height: int
    changed: bool  # False: the user's bytes, untouched


def _open(data: bytes, index: int) -> Image.Image:
    """The frame opened lazily: its header is read, not its pixels."""
    try:
        return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise FrameError(index, f"cannot be decoded ({type(exc).__name__})") from None


def _upright_size(image: Image.Image, orientation: int) -> tuple[int, int]:
    # Displayed orientation: what the user sees is what the sizes refer to.
    width, height = image.size
    return (height, width) if orientation in _SWAPS_SIDES else (width, height)


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _encode(image: Image.Image, as_jpeg: bool) -> tuple[bytes, str]:
    out = io.BytesIO()
    if as_jpeg:
        image.save(out, format="JPEG", quality=95, subsampling=0)
        return out.getvalue(), "image/jpeg"
    image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue(), "image/png"


def normalise_frames(
    frames: Sequence[bytes], *, memory_budget: int | None = None, hold: Hold = hold_nothing
) -> list[NormalisedFrame]:
    """The first frame as it is; every other one centre-cropped to its aspect and resized to its size.

    A later frame already upright and of exactly that size is kept as it is. Re-encoded frames are JPEG
    (quality 95, no chroma subsampling) when the first frame is JPEG, otherwise PNG (lossless).
    Only the frames that change are decoded, one at a time, a JPEG reduced on load to what the fit needs;
    each decode holds its planned bytes with `hold` (the image workers' shared budget), and a frame whose
    fit would need more than `memory_budget` by itself raises `FrameTooLarge`.
    Raises FrameError for a frame that is not an image, or a count outside 3..6.
    """
    if not MIN_FRAMES <= len(frames) <= MAX_FRAMES:
        raise ValueError(f"a story takes {MIN_FRAMES} to {MAX_FRAMES} frames, not {len(frames)}")
    with _open(frames[0], 0) as first:
        target = _upright_size(first, _orientation(first))
        first_is_jpeg = (first.format or "").upper() == "JPEG" or _is_jpeg(frames[0])
    result = [
        NormalisedFrame(
            frames[0], "image/jpeg" if first_is_jpeg else _mime(frames[0]), target[0], target[1], changed=False
        )
    ]
    for index, data in enumerate(frames[1:], start=1):
        with _open(data, index) as image:
            orientation = _orientation(image)
            # Kept only when no EXIF rotation is pending: the provider may not apply it (unconfirmed).
            if image.size == target and orientation in (0, 1):
                result.append(NormalisedFrame(data, _mime(data), target[0], target[1], changed=False))
                continue
            plan = _plan_fit(image, orientation, target)
            if memory_budget is not None and plan.peak_bytes > memory_budget:
                raise FrameTooLarge(index, image.size, target)
            with hold(plan.peak_bytes):
                fitted = _fit(image, index, orientation, target, plan)
                encoded, mime = _encode(fitted, first_is_jpeg)
                del fitted
        result.append(NormalisedFrame(encoded, mime, target[0], target[1], changed=True))
    return result


@dataclass(frozen=True, slots=True)
class _FitPlan:
    upright: tuple[int, int]  # the frame's full size, as the user sees it
    scale: int  # a JPEG decoded at 1/scale of its sides
    crop: tuple[float, float, float, float]  # of the upright picture, in its full-size pixels
    peak_bytes: int


def _crop_box(size: tuple[int, int], target: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centred crop of `size` with `target`'s aspect ratio (what `ImageOps.fit` cuts)."""
    width, height = size
    if width / height >= target[0] / target[1]:
        crop_width, crop_height = target[0] / target[1] * height, float(height)
    else:
        crop_width, crop_height = float(width), width * target[1] / target[0]
    left, top = (width - crop_width) / 2, (height - crop_height) / 2
    return left, top, left + crop_width, top + crop_height


def _plan_fit(image: Image.Image, orientation: int, target: tuple[int, int]) -> _FitPlan:
    upright = _upright_size(image, orientation)
    crop = _crop_box(upright, target)
    scale = 1
    if (image.format or "").upper() in ("JPEG", "MPO"):  # reduced on load, never below what the fit needs
        room = min((crop[2] - crop[0]) / target[0], (crop[3] - crop[1]) / target[1])
        scale = max((s for s in (1, 2, 4, 8) if s <= room and s <= min(image.size)), default=1)
    decoded = (-(-image.size[0] // scale), -(-image.size[1] // scale))
    pixel = pixel_bytes(image.mode)
    peak = pixel * decoded[0] * decoded[1]
    if orientation_transpose(orientation) is not None:
        peak *= 2  # the upright copy, before the crop
    if image.mode not in ("RGB", "L"):
        peak += 2 * 4 * decoded[0] * decoded[1]  # flattened: an RGBA and an RGB copy
    box = (round((crop[2] - crop[0]) / scale), round((crop[3] - crop[1]) / scale))
    peak += resize_scratch("RGB", box, target) + 4 * target[0] * target[1]
    peak += 2 * 3 * target[0] * target[1]  # the encoded frame (at most about its raw size) and its copy
    return _FitPlan(upright, scale, crop, peak)


def _fit(image: Image.Image, index: int, orientation: int, target: tuple[int, int], plan: _FitPlan) -> Image.Image:
    if plan.scale > 1:
        image.draft(image.mode, (image.size[0] // plan.scale, image.size[1] // plan.scale))
    try:
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise FrameError(index, f"cannot be decoded ({type(exc).__name__})") from None
    turn = orientation_transpose(orientation)
    upright = image.transpose(turn) if turn is not None else image
    colour = _flatten(upright) if upright.mode not in ("RGB", "L") else upright
    # The crop box in the decoded picture's pixels (a reduced JPEG is 1/scale of the full size).
    fx, fy = colour.size[0] / plan.upright[0], colour.size[1] / plan.upright[1]
    box = (plan.crop[0] * fx, plan.crop[1] * fy, plan.crop[2] * fx, plan.crop[3] * fy)
    fitted = colour.resize(target, Image.Resampling.LANCZOS, box=box, reducing_gap=REDUCING_GAP)
    return fitted if fitted.mode == "RGB" else fitted.convert("RGB")


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
