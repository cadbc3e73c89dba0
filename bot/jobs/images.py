"""Check an uploaded picture and turn it into what the provider accepts.

Pure and CPU-bound: callers run `check_image` through `asyncio.to_thread`. Everything that can be decided
from the file header (emptiness, size, real format, pixel count, side lengths, animation) is decided before
a single pixel is decoded, so hostile files cost next to nothing. Then the image is fully decoded (to catch
truncation) and normalised: EXIF orientation baked in, 8-bit RGB (or untouched 8-bit grey), alpha flattened
onto white, sides over `max_side` scaled down once. The original bytes are sent unchanged whenever that is
already true and the file is small enough; otherwise it is re-encoded (PNG for lossless sources when it
fits, else JPEG stepping down).

Memory: a 0.3 MB PNG can hold 64 megapixels, 256 MB once decoded. Before decoding, `plan_decode` works out
from the header the bytes every step will hold at its peak (Pillow keeps 4 bytes a pixel for RGB, RGBA,
LA, CMYK; 1 for L and P). A JPEG is decoded reduced (libjpeg's DCT scaling, Pillow's `draft`) to the size it
will be sent at, or to 1/8 when only checked; any other format is decoded whole, and a picture whose decode
would not fit `memory_budget` is refused naming the largest picture of its kind that fits, in pixels. The
caller holds the planned bytes from a shared budget (`DecodeBudget`) while the decode runs.

Every refusal is an `InvalidImage("image.<reason>", ...)` whose message tells the user what to change.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import hashlib
import io
import math
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from PIL import Image, ImageFile, JpegImagePlugin

from bot.errors import InvalidImage

if TYPE_CHECKING:
    from bot.settings import Settings

MIB: Final = 1024 * 1024
# Fits a 512 MiB process: ~130 MB of bot, this much of pixels, the rest for the bytes of requests in flight.
DEFAULT_MEMORY_BUDGET: Final = 256 * MIB

ALLOWED_FORMATS: Final = frozenset({"JPEG", "PNG", "BMP", "WEBP"})
MIME_TYPES: Final = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "WEBP": "image/webp"}

# Stepped down until the JPEG fits; each step costs one encode (~0.1 s for 12 MP).
JPEG_QUALITIES: Final = (90, 80, 70, 60, 50, 40)
PNG_COMPRESS_LEVEL: Final = 6
WHITE: Final = (255, 255, 255)

# Mirrors ImageOps.exif_transpose, without its rewrite of the EXIF block (we drop metadata on re-encode,
# and rewriting can fail on malformed EXIF from odd cameras).
_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION_TAG: Final = 0x0112
_SWAPS_SIDES: Final = frozenset({5, 6, 7, 8})

# What Pillow raises on damaged data (C decoders raise OSError; plugins raise the rest). Pillow also
# *warns* about some damage (UserWarning: malformed MPO index, corrupt EXIF); where warnings are escalated
# to errors (-W error, as in the tests) those arrive as exceptions and mean the same thing.
_DECODE_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error, UserWarning)

_GREY_MODES: Final = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N"})
_RGB_MODES: Final = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "P", "PA"})


@dataclass(frozen=True)
class ImageLimits:
    """What an uploaded frame may be (bytes, sides and pixels in px); all positive, `min_side <= max_side`."""

    max_bytes: int
    min_side: int
    max_side: int
    reencode_bytes: int
    max_pixels: int = 8000 * 8000
    # Bytes the decoding work of one picture may hold at its peak (and all pictures at once, `DecodeBudget`).
    memory_budget: int = DEFAULT_MEMORY_BUDGET

    def __post_init__(self) -> None:
        if (
            min(self.max_bytes, self.min_side, self.max_side, self.reencode_bytes, self.max_pixels, self.memory_budget)
            < 1
        ):
            raise ValueError(f"image limits must be positive: {self}")
        if self.min_side > self.max_side:
            raise ValueError(f"min_side {self.min_side} is larger than max_side {self.max_side}")

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        """The configured limits; the re-encode target is capped at the upload limit."""
        return cls(
            max_bytes=settings.image_max_bytes,
            min_side=settings.image_min_side,
            max_side=settings.image_max_side,
            # What we send must also respect the hard cap.
            reencode_bytes=min(settings.image_reencode_bytes, settings.image_max_bytes),
            memory_budget=settings.image_memory_budget_mb * MIB,
        )


@dataclass(frozen=True, repr=False)
class CheckedImage:
    """A frame that passed `check_image`: the bytes to send (re-encoded if needed), their type and sides."""

    data: bytes
    mime: str
    format: str
    width: int
    height: int
    sha256: str
    reencoded: bool
    decoded_size: tuple[int, int] = (0, 0)  # what was decoded: smaller than the file for a reduced JPEG
    planned_bytes: int = 0  # the decode's planned peak (held from the budget while it ran)

    def data_uri(self) -> str:
        """The image inline as a base64 `data:` URI (how kf2v requests send frames); never log it."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    def __repr__(self) -> str:
        # Never dump megabytes of image into a log line or a test failure.
        return (
            f"CheckedImage({self.format} {self.width}x{self.height}, {len(self.data)} bytes, "
            f"sha256={self.sha256[:12]}…, reencoded={self.reencoded})"
        )


# --- sniffing -----------------------------------------------------------------------------------------

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_BMP_DIB_SIZES: Final = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_HEIF_BRANDS: Final = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})


def sniff_format(data: bytes) -> str | None:
    """The picture format the bytes really are (magic numbers), whatever the file name or content type claim.

    Returns one of JPEG, PNG, BMP, WEBP (usable) or GIF, TIFF, HEIC, AVIF, ICO, PSD, JPEG XL, JPEG 2000,
    QOI, SVG (pictures we can't send), else None.
    """
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(_PNG_SIGNATURE):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return "BMP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "HEIC"
        if brand in _AVIF_BRANDS:
            return "AVIF"
        return None  # an ISO media file: video, see _describe_other
    if head[:4] == b"\x00\x00\x01\x00" and head[4:6] != b"\x00\x00":
        return "ICO"
    if head[:4] == b"8BPS":
        return "PSD"
    if head[:2] == b"\xff\x0a" or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "JPEG XL"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head[:4] == b"\xff\x4f\xff\x51":
        return "JPEG 2000"
    if head[:4] == b"qoif":
        return "QOI"
    text = _as_text(data)
    if text is not None:
        start = text.lstrip().lower()
        if start.startswith("<svg") or (start.startswith("<?xml") and "<svg" in start[:2048]):
            return "SVG"
    return None


_OTHER_MAGIC: Final = (
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"PK\x05\x06", "ZIP"),
    (b"\x1f\x8b", "GZIP"),
    (b"7z\xbc\xaf\x27\x1c", "7Z"),
    (b"Rar!", "RAR"),
    (b"\x1a\x45\xdf\xa3", "WEBM"),
    (b"ID3", "MP3"),
    (b"fLaC", "FLAC"),
    (b"OggS", "OGG"),
    (b"MZ", "EXE"),
    (b"\x7fELF", "ELF"),
)


def _describe_other(data: bytes) -> str | None:
    """A short, language-neutral label for a file that is not a picture, or None when unrecognisable."""
    head = data[:16]
    for magic, label in _OTHER_MAGIC:
        if head.startswith(magic):
            return label
    if head[:4] == b"RIFF":
        return {b"WAVE": "WAV", b"AVI ": "AVI"}.get(head[8:12], "RIFF")
    if head[4:8] == b"ftyp":
        return "MOV" if head[8:12] == b"qt  " else "MP4"
    text = _as_text(data)
    if text is None:
        return None
    start = text.lstrip().lower()
    if start.startswith(("<!doctype html", "<html")):
        return "HTML"
    if start.startswith(("{", "[")):
        return "JSON"
    return "TXT"


def _as_text(data: bytes) -> str | None:
    """The first few KB as text if they read as UTF-8 (or UTF-16 with a BOM) without control bytes."""
    sample = data[:4096]
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return sample[: len(sample) // 2 * 2].decode("utf-16")
        except UnicodeDecodeError:
            return None
    try:
        # Incremental, so a multi-byte character cut by the 4 KB window is not an error.
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(sample, final=False)
    except UnicodeDecodeError:
        return None
    if not text or any(ord(c) < 32 and c not in "\t\n\r\f" for c in text):
        return None
    return text


# --- headers: dimensions without decoding ----------------------------------------------------------------

_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) read from the header of a sniffed JPEG/PNG/BMP/WEBP, or None when it is unreadable."""
    size = {"JPEG": _jpeg_size, "PNG": _png_size, "BMP": _bmp_size, "WEBP": _webp_size}[fmt](data)
    if size is None or size[0] < 1 or size[1] < 1:
        return None
    return size


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    # Walk the marker segments up to the scan; the last frame header wins, as in Pillow. Segments are
    # skipped by length, so an EXIF thumbnail's own SOF is never mistaken for the picture's.
    size = None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        i += 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # stand-alone markers carry no length
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan
            break
        length = int.from_bytes(data[i : i + 2], "big")
        if length < 2:
            return None
        if marker in _JPEG_SOF and i + 7 <= n:
            height = int.from_bytes(data[i + 3 : i + 5], "big")
            width = int.from_bytes(data[i + 5 : i + 7], "big")
            size = (width, height)
        i += length
    return size


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    dib = int.from_bytes(data[14:18], "little")
    if dib == 12:
        width, height = struct.unpack("<HH", data[18:22])
        return int(width), int(height)
    width, height = struct.unpack("<ii", data[18:26])
    return int(width), abs(int(height))  # a negative height means top-down rows


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            return None
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


def _webp_is_lossless(data: bytes) -> bool:
    i = 12
    while i + 8 <= len(data):
        fourcc = data[i : i + 4]
        if fourcc in (b"VP8L", b"VP8 "):
            return fourcc == b"VP8L"
        i += 8 + ((int.from_bytes(data[i + 4 : i + 8], "little") + 1) & ~1)  # chunks are padded to even sizes
    return False


def _png_is_plain(data: bytes) -> bool:
    """An 8-bit grey or RGB PNG (IHDR bit depth and colour type): sendable as is if nothing else changes."""
    return data[24] == 8 and data[25] in (0, 2)


# --- the check ---------------------------------------------------------------------------------------------


def size_refusal(size: int, limit: int) -> InvalidImage:
    """The too-large refusal, also used by callers that know the size before downloading."""
    return InvalidImage("image.too_large", size_mb=_mb_up(size), limit_mb=_mb_down(limit))


def _mb_up(n: int) -> float:
    return math.ceil(n / MIB * 10) / 10  # rounded up, so 10.01 MB never reads as the 10 MB limit


def _mb_down(n: int) -> float:
    return math.floor(n / MIB * 10) / 10


def _align_pillow_bomb_limit(max_pixels: int) -> None:
    # Our header check runs first and is the policy. Pillow's own check in Image.open warns
    # (DecompressionBombWarning: an exception under -W error, noise in production logs) above its
    # MAX_IMAGE_PIXELS and raises above twice that; keep its threshold at or above ours so it can
    # only ever act as a backstop for files we have already vetted.
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _orientation(im: Image.Image) -> int:
    # A PNG's getexif() decodes the whole image when no eXIf chunk was seen in the header: avoid that.
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF must not reject an otherwise fine photo
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _fit_within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled down, aspect kept, so that no side exceeds `max_side`; itself when it already fits."""
    width, height = size
    longest = max(width, height)
    if longest <= max_side:
        return size
    return max(1, width * max_side // longest), max(1, height * max_side // longest)


def _check_sides(width: int, height: int, limits: ImageLimits) -> tuple[int, int]:
    """The size the frame is sent at (as the user sees it): a side over `max_side` is scaled down once."""
    if min(width, height) < limits.min_side:
        raise InvalidImage("image.too_small", width=width, height=height, min=limits.min_side)
    target = _fit_within((width, height), limits.max_side)
    if min(target) < limits.min_side:  # so long and thin that, scaled down, its short side would be too short
        raise InvalidImage("image.too_large_dimensions", width=width, height=height, max=limits.max_side)
    return target


Hold = Callable[[int], AbstractContextManager[object]]


def hold_nothing(_: int) -> AbstractContextManager[object]:
    """A `Hold` that holds nothing (a caller without a shared budget)."""
    return contextlib.nullcontext()


def check_image(data: bytes, limits: ImageLimits, hold: Hold = hold_nothing) -> CheckedImage:
    """Validate an upload and return what to send. Raises `InvalidImage` with an `image.*` key.

    `hold(n)` is entered with the decode's planned peak in bytes (never more than `limits.memory_budget`)
    just before any pixel is decoded and left once they are freed: `DecodeBudget.hold` shares one budget.
    """
    if not data:
        raise InvalidImage("image.empty")
    if len(data) > limits.max_bytes:
        raise size_refusal(len(data), limits.max_bytes)

    fmt = sniff_format(data)
    if fmt is None:
        what = _describe_other(data)
        if what is None:
            raise InvalidImage("image.unrecognised")
        raise InvalidImage("image.not_an_image", what=what)
    if fmt not in ALLOWED_FORMATS:
        raise InvalidImage("image.unsupported_format", format=fmt)

    size = _header_size(data, fmt)
    if size is None:
        raise InvalidImage("image.corrupt")
    if size[0] * size[1] > limits.max_pixels:
        # Decided from the header alone: Pillow never sees the file.
        raise InvalidImage("image.bomb", width=size[0], height=size[1], max=limits.max_side)

    _align_pillow_bomb_limit(limits.max_pixels)
    try:
        im = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage("image.bomb", width=size[0], height=size[1], max=limits.max_side) from None
    except _DECODE_ERRORS:
        raise InvalidImage("image.corrupt") from None
    with im:
        return _check_opened(im, data, fmt, limits, hold)


def _check_opened(im: ImageFile.ImageFile, data: bytes, fmt: str, limits: ImageLimits, hold: Hold) -> CheckedImage:
    width, height = im.size
    if width * height > limits.max_pixels:  # only if Pillow disagrees with our header reading
        raise InvalidImage("image.bomb", width=width, height=height, max=limits.max_side)
    # Phones write multi-picture JPEGs (MPO: the photo plus a depth map or preview); Pillow calls those
    # animated, but only the first picture is shown or sent.
    if im.format != "MPO" and getattr(im, "n_frames", 1) > 1:
        raise InvalidImage("image.animated")

    orientation = _orientation(im)
    shown = (height, width) if orientation in _SWAPS_SIDES else (width, height)
    target = _check_sides(*shown, limits)  # as the user sees it, before paying for the decode

    keep = _keeps_bytes(im, data, fmt, orientation, shown, target, limits)
    plan = plan_decode(im.mode, im.has_transparency_data, orientation, (width, height), target, limits,
                       reducible=fmt == "JPEG", keep=keep)  # fmt: skip
    if plan.scale > 1:
        im.draft(im.mode, (width // plan.scale, height // plan.scale))  # header work only: no pixel yet
        if im.size != plan.decoded_size:  # Pillow could not reduce this one after all: plan the whole decode
            plan = plan_decode(im.mode, im.has_transparency_data, orientation, (width, height), target, limits,
                               reducible=False, keep=keep)  # fmt: skip
    with hold(plan.peak_bytes):
        try:
            return _decode(im, data, fmt, limits, plan, keep=keep, orientation=orientation, shown=shown)
        finally:
            im.close()  # its pixels go back before the bytes held for them do


def _decode(
    im: ImageFile.ImageFile,
    data: bytes,
    fmt: str,
    limits: ImageLimits,
    plan: DecodePlan,
    *,
    keep: bool,
    orientation: int,
    shown: tuple[int, int],
) -> CheckedImage:
    """Decode as planned, normalise, re-encode if needed: the part of the check that holds the budget."""
    width, height = shown[::-1] if orientation in _SWAPS_SIDES else shown  # as stored, before any reduction
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage("image.bomb", width=width, height=height, max=limits.max_side) from None
    except _DECODE_ERRORS:
        raise InvalidImage("image.corrupt") from None
    if fmt == "PNG" and orientation == 1 and "exif" in im.info:  # an eXIf chunk after the pixel data
        orientation = _orientation(im)
        if orientation != 1:  # rare: planned again (refused if over the budget), run on what is held
            shown = (height, width) if orientation in _SWAPS_SIDES else (width, height)
            target = _check_sides(*shown, limits)
            keep = False
            plan = plan_decode(im.mode, im.has_transparency_data, orientation, im.size, target, limits,
                               reducible=False, keep=False)  # fmt: skip

    if keep and not im.has_transparency_data and im.mode in ("RGB", "L"):
        # Decoded (reduced, for a JPEG) only to prove it is whole: the upload is sent as it is.
        return _result(data, fmt, *shown, reencoded=False, plan=plan)
    if keep:  # the header said plain 8-bit, the pixels say otherwise: normalised as decoded
        plan = replace(plan, steps=_steps(im.mode, im.has_transparency_data, orientation, im.size, im.size))
    pixels = _normalise(im, plan)
    changed = pixels is not im or (fmt == "PNG" and not _png_is_plain(data))  # 16-bit/sub-byte: re-encoded
    if not changed and len(data) <= limits.reencode_bytes:
        return _result(data, fmt, *shown, reencoded=False, plan=plan)

    lossless = fmt in ("PNG", "BMP") or (fmt == "WEBP" and _webp_is_lossless(data))
    # Re-compressing the very same PNG pixels won't shrink them meaningfully: go straight to JPEG then.
    try_png = lossless and (changed or fmt != "PNG")
    icc = im.info.get("icc_profile") if _same_colour_family(im.mode, pixels.mode) else None
    source_jpeg = _jpeg_source_options(im) if fmt == "JPEG" and im.mode == pixels.mode else {}
    spare = limits.memory_budget - plan.peak_bytes
    out, out_fmt, pixels = _reencode(pixels, limits, try_png=try_png, icc=icc, source_jpeg=source_jpeg, spare=spare)
    return _result(out, out_fmt, pixels.width, pixels.height, reencoded=True, plan=plan)


def _keeps_bytes(
    im: Image.Image,
    data: bytes,
    fmt: str,
    orientation: int,
    shown: tuple[int, int],
    target: tuple[int, int],
    limits: ImageLimits,
) -> bool:
    """Whether, from the header, the upload can be sent as it is (decoded only to check it is whole)."""
    return (
        im.mode in ("RGB", "L")
        and not im.has_transparency_data
        and orientation == 1
        and target == shown
        and len(data) <= limits.reencode_bytes
        and (fmt != "PNG" or _png_is_plain(data))
    )


def _result(data: bytes, fmt: str, width: int, height: int, *, reencoded: bool, plan: DecodePlan) -> CheckedImage:
    return CheckedImage(
        data=data,
        mime=MIME_TYPES[fmt],
        format=fmt,
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
        reencoded=reencoded,
        decoded_size=plan.decoded_size,
        planned_bytes=plan.peak_bytes,
    )


# --- the memory plan ----------------------------------------------------------------------------------------

# Pillow's `reduce`-then-resample: a box reduction by whole factors while the picture is at least twice
# the target, then LANCZOS for the rest (as good as LANCZOS alone to the eye, a fraction of its work).
REDUCING_GAP: Final = 2.0
_JPEG_SCALES: Final = (1, 2, 4, 8)  # libjpeg decodes a JPEG at 1/1, 1/2, 1/4 or 1/8 of its sides


def pixel_bytes(mode: str) -> int:
    """Bytes Pillow keeps for one pixel of `mode` (Storage.c: 8-bit one-band modes 1, I;16 2, every other 4:
    RGB included, stored as 32 bits)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


@dataclass(frozen=True)
class _Step:
    """One new picture made while normalising: its mode and size, and what it holds only while it is made."""

    mode: str
    size: tuple[int, int]
    run: Callable[[Image.Image], Image.Image]
    scratch: int = 0

    @property
    def bytes(self) -> int:
        return pixel_bytes(self.mode) * self.size[0] * self.size[1]


@dataclass(frozen=True)
class DecodePlan:
    """How a picture is decoded and normalised, and the bytes that takes at its peak."""

    scale: int  # a JPEG decoded at 1/scale of its sides (always 1 for other formats)
    decoded_size: tuple[int, int]  # as stored (before EXIF orientation)
    steps: tuple[_Step, ...]  # from the decoded pixels to the pixels sent
    peak_bytes: int


def plan_decode(
    mode: str,
    transparent: bool,
    orientation: int,
    size: tuple[int, int],
    target: tuple[int, int],
    limits: ImageLimits,
    *,
    reducible: bool,
    keep: bool,
) -> DecodePlan:
    """The cheapest decode of a `size` picture (as stored) sent at `target` (upright) within the budget.

    A JPEG (`reducible`) is decoded at the largest DCT scale at which it is still at least `target`, or, when
    that would not fit the budget, smaller still (it is then sent at the size it was decoded at); when its
    bytes are sent as they are (`keep`) it is decoded at 1/8, only to check it. Refuses a picture that does
    not fit even so, naming the largest picture of its kind that does, in pixels.
    """
    swaps = orientation in _SWAPS_SIDES
    stored_target = (target[1], target[0]) if swaps else target
    scales: tuple[int, ...] = (1,)
    if reducible:
        widest = min(size[0] // stored_target[0], size[1] // stored_target[1])
        fits_target = max(s for s in _JPEG_SCALES if s <= max(1, widest))
        scales = (8,) if keep else tuple(s for s in _JPEG_SCALES if s >= fits_target)
        scales = tuple(s for s in scales if s <= min(size)) or (1,)
    for scale in scales:
        decoded = (-(-size[0] // scale), -(-size[1] // scale))
        sent = stored_target if keep or scale == scales[0] else decoded  # smaller than asked: sent as decoded
        if not keep and scale != scales[0] and min(sent) < limits.min_side:
            break  # any smaller would be too small to send
        steps = () if keep else _steps(mode, transparent, orientation, decoded, sent)
        peak = _peak_bytes(mode, decoded, steps, encode=0 if keep else 2 * limits.reencode_bytes)
        plan = DecodePlan(scale, decoded, steps, peak)
        if peak <= limits.memory_budget:
            return plan
    raise _over_budget(mode, transparent, orientation, size, limits)


def _steps(
    mode: str, transparent: bool, orientation: int, decoded: tuple[int, int], sent: tuple[int, int]
) -> tuple[_Step, ...]:
    """The pictures made on the way to 8-bit RGB (or grey), scaled to `sent` (as stored), then upright.

    Colour first (alpha cannot be resampled without a premultiplied copy of the whole picture), then the
    scaling, then the orientation, on the smallest picture by then.
    """
    steps: list[_Step] = []
    if mode.startswith("I"):
        # Pillow converts 16-bit grey to 8-bit by clipping (everything above 255 turns white): scale instead.
        steps += [
            _Step("I", decoded, lambda im: im.convert("I")),
            _Step("I", decoded, lambda im: im.point(_scale_16_to_8)),
            _Step("L", decoded, lambda im: im.convert("L")),
            _Step("RGB", decoded, lambda im: im.convert("RGB")),
        ]
    elif transparent:
        # The provider documents PNG without alpha; white is what most viewers show behind transparency.
        if mode not in ("RGBA", "LA"):
            steps.append(_Step("RGBA", decoded, lambda im: im.convert("RGBA")))
        steps.append(_Step("RGB", decoded, _flatten_onto_white))
    elif mode not in ("RGB", "L"):  # CMYK, palette, 1-bit, YCbCr, ...
        steps.append(_Step("RGB", decoded, lambda im: im.convert("RGB")))
    out_mode = steps[-1].mode if steps else mode
    if sent != decoded:
        steps.append(_Step(out_mode, sent, lambda im: _scale_down(im, sent), resize_scratch(out_mode, decoded, sent)))
    method = _TRANSPOSE.get(orientation)
    if method is not None:
        upright = (sent[1], sent[0]) if orientation in _SWAPS_SIDES else sent
        steps.append(_Step(out_mode, upright, lambda im: im.transpose(method)))
    return tuple(steps)


def _peak_bytes(mode: str, decoded: tuple[int, int], steps: Sequence[_Step], *, encode: int) -> int:
    """The decoded pixels, then at each step the previous picture, the new one and the step's scratch."""
    peak = previous = 0
    for step in steps:
        peak = max(peak, previous + step.bytes + step.scratch)
        previous = step.bytes
    return pixel_bytes(mode) * decoded[0] * decoded[1] + peak + encode


def resize_scratch(mode: str, source: tuple[int, int], target: tuple[int, int]) -> int:
    """Bytes `Image.resize` holds besides its result when scaling `source` to `target` (reducing_gap 2)."""
    # Mirrors Image.resize: reduce() by whole factors (a new picture), then a horizontal pass into a
    # picture as wide as the target and as tall as the source, then the vertical pass (the step's own).
    factor_x = int(source[0] / target[0] / REDUCING_GAP) or 1
    factor_y = int(source[1] / target[1] / REDUCING_GAP) or 1
    reduced = (-(-source[0] // factor_x), -(-source[1] // factor_y))
    scratch = reduced[0] * reduced[1] if reduced != source else 0
    return pixel_bytes(mode) * (scratch + target[0] * reduced[1])


def orientation_transpose(orientation: int) -> Image.Transpose | None:
    """The turn or flip that EXIF `orientation` asks for; None when the picture is upright (or the tag odd)."""
    return _TRANSPOSE.get(orientation)


def _scale_down(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)


def _flatten_onto_white(im: Image.Image) -> Image.Image:
    # Pasted through its own alpha: no RGBA copy and no alpha band are made (RGBA and LA paste onto RGB as is).
    out = Image.new("RGB", im.size, WHITE)
    out.paste(im, mask=im)
    return out


def _over_budget(
    mode: str, transparent: bool, orientation: int, size: tuple[int, int], limits: ImageLimits
) -> InvalidImage:
    # The largest picture of this kind (format, colours, orientation) whose decode fits: the cost grows
    # with the pixels, so it is the budget over the cost of one pixel, less what does not grow (encoding).
    encode = 2 * limits.reencode_bytes
    whole = _peak_bytes(mode, size, _steps(mode, transparent, orientation, size, size), encode=encode) - encode
    per_pixel = whole / (size[0] * size[1])
    max_pixels = max(0, int((limits.memory_budget - encode) / per_pixel))
    shown = (size[1], size[0]) if orientation in _SWAPS_SIDES else size
    side = math.isqrt(max_pixels)
    return InvalidImage(
        "image.over_memory",
        width=shown[0],
        height=shown[1],
        pixels=f"{size[0] * size[1]:,}",
        max_pixels=f"{max_pixels:,}",
        side=f"{side:,}",
    )


class DecodeBudget:
    """The bytes every decode in the process may hold at once (`ImageLimits.memory_budget`), shared by the
    image workers' threads: `hold(n)` waits until `n` more bytes fit. A plan never asks for more than the
    whole budget (`plan_decode` refuses such a picture), so every hold is eventually granted.
    Counts for metrics and tests: `held` now, `peak` ever, `waited` (holds that had to wait).
    """

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("the decode budget must be positive")
        self.total = total
        self.held = 0
        self.peak = 0
        self.waited = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, n: int) -> Iterator[None]:
        """Hold `n` bytes (at most the whole budget) while the block runs; waits while they do not fit."""
        n = min(max(n, 0), self.total)
        with self._changed:
            if self.held + n > self.total:
                self.waited += 1
                self._changed.wait_for(lambda: self.held + n <= self.total)
            self.held += n
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            with self._changed:
                self.held -= n
                self._changed.notify_all()


class CheckedCache:
    """Verdicts on uploads that passed unchanged, by their SHA-256 and the limits: the same bytes are not decoded
    twice (members re-run /kf2v with the same keyframes and a new prompt; a 12 MP photo costs ~0.2 s and
    ~200 MB to decode). `check_image` is a pure function of (bytes, limits), so a remembered verdict is the
    one a new decode would reach. Only images sent as uploaded are kept (a few numbers each, never pixels
    or bytes); refusals and re-encoded images are decoded every time. Thread-safe: image workers share it.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._verdicts: OrderedDict[tuple[str, ImageLimits], tuple[str, int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, data: bytes, limits: ImageLimits) -> CheckedImage | None:
        """The check's result for these exact bytes under these limits, if they passed unchanged before."""
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            verdict = self._verdicts.get((digest, limits))
            if verdict is not None:
                self._verdicts.move_to_end((digest, limits))
        if verdict is None:
            return None
        fmt, width, height = verdict
        return CheckedImage(data, MIME_TYPES[fmt], fmt, width, height, sha256=digest, reencoded=False)

    def remember(self, image: CheckedImage, limits: ImageLimits) -> None:
        """Keep the verdict on an image that passed unchanged (the least recently used goes past `size`)."""
        if image.reencoded:  # its bytes are not the upload's: nothing to key it by without keeping them
            return
        with self._lock:
            self._verdicts[(image.sha256, limits)] = (image.format, image.width, image.height)
            self._verdicts.move_to_end((image.sha256, limits))
            while len(self._verdicts) > self.size:
                self._verdicts.popitem(last=False)

    def __len__(self) -> int:
        return len(self._verdicts)


# --- normalising and re-encoding -------------------------------------------------------------------------


def _normalise(im: Image.Image, plan: DecodePlan) -> Image.Image:
    """Upright, 8-bit RGB (or untouched 8-bit grey) without alpha, at the size it is sent: the plan's steps."""
    out = im
    for step in plan.steps:
        out = step.run(out)
    return out


def _scale_16_to_8(value: float) -> float:
    return value * (1 / 257)  # 65535 -> 255; Pillow applies a linear function to I images as one scale + offset


def _same_colour_family(source_mode: str, out_mode: str) -> bool:
    # An ICC profile only describes the colour space it was made for (never attach a CMYK or grey
    # profile to RGB pixels).
    if out_mode == "RGB":
        return source_mode in _RGB_MODES
    return out_mode == "L" and source_mode in _GREY_MODES


def _jpeg_source_options(im: Image.Image) -> dict[str, object]:
    # Reusing the source's quantisation tables and chroma subsampling keeps a photo we only had to turn
    # upright at its original quality and about its original size.
    tables = getattr(im, "quantization", None)
    if not tables:
        return {}
    options: dict[str, object] = {"qtables": dict(tables)}
    sampling = JpegImagePlugin.get_sampling(im)
    if sampling != -1:
        options["subsampling"] = sampling
    return options


def _encode(pixels: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    pixels.save(buffer, fmt, **options)
    return buffer.getvalue()


def _reencode(
    pixels: Image.Image,
    limits: ImageLimits,
    *,
    try_png: bool,
    icc: bytes | None,
    source_jpeg: dict[str, object],
    spare: int,
) -> tuple[bytes, str, Image.Image]:
    target = limits.reencode_bytes
    extra: dict[str, object] = {"icc_profile": icc} if icc else {}
    if try_png:
        out = _encode(pixels, "PNG", compress_level=PNG_COMPRESS_LEVEL, **extra)
        if len(out) <= target:
            return out, "PNG", pixels

    attempts: list[Callable[[Image.Image], bytes]] = []
    if source_jpeg:
        attempts.append(lambda p: _encode(p, "JPEG", **source_jpeg, **extra))
    attempts += [_jpeg_at(q, extra) for q in JPEG_QUALITIES]
    for _ in range(4):
        for attempt in attempts:
            out = attempt(pixels)
            if len(out) <= target:
                return out, "JPEG", pixels
        # Even the lowest quality is too big (only near-incompressible noise does that): shrink.
        scale = math.sqrt(target / len(out)) * 0.9
        new_size = (max(1, int(pixels.width * scale)), max(1, int(pixels.height * scale)))
        if min(new_size) < limits.min_side:
            break
        # Not in the plan (only near-incompressible noise gets here): only within the budget left unplanned.
        if pixel_bytes(pixels.mode) * new_size[0] * (new_size[1] + pixels.height) > spare:
            break
        pixels = pixels.resize(new_size, Image.Resampling.LANCZOS)
        attempts = [_jpeg_at(q, extra) for q in JPEG_QUALITIES[:3]]
    raise size_refusal(len(out), target)


def _jpeg_at(quality: int, extra: dict[str, object]) -> Callable[[Image.Image], bytes]:
    return lambda p: _encode(p, "JPEG", quality=quality, **extra)
