"""Check an uploaded picture and turn it into what the provider accepts.

Pure and CPU-bound: callers run `check_image` through `asyncio.to_thread`. Everything that can be decided
from the file header (emptiness, size, real format, pixel count, side lengths, animation) is decided before
a single pixel is decoded, so hostile files cost next to nothing. Then the image is fully decoded (to catch
truncation) and normalised: EXIF orientation baked in, 8-bit RGB (or untouched 8-bit grey), alpha flattened
onto white. The original bytes are sent unchanged whenever that is already true and the file is small
enough; otherwise it is re-encoded (PNG for lossless sources when it fits, else JPEG stepping down).

Every refusal is an `InvalidImage("image.<reason>", ...)` whose message tells the user what to change.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import io
import math
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from PIL import Image, ImageFile, JpegImagePlugin

from bot.errors import InvalidImage

if TYPE_CHECKING:
    from bot.settings import Settings

MIB: Final = 1024 * 1024

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

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.min_side, self.max_side, self.reencode_bytes, self.max_pixels) < 1:
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


def _check_sides(width: int, height: int, limits: ImageLimits) -> None:
    if min(width, height) < limits.min_side:
        raise InvalidImage("image.too_small", width=width, height=height, min=limits.min_side)
    if max(width, height) > limits.max_side:
        raise InvalidImage("image.too_large_dimensions", width=width, height=height, max=limits.max_side)


def check_image(data: bytes, limits: ImageLimits) -> CheckedImage:
    """Validate an upload and return what to send. Raises `InvalidImage` with an `image.*` key."""
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
        return _check_opened(im, data, fmt, limits)


def _check_opened(im: ImageFile.ImageFile, data: bytes, fmt: str, limits: ImageLimits) -> CheckedImage:
    width, height = im.size
    if width * height > limits.max_pixels:  # only if Pillow disagrees with our header reading
        raise InvalidImage("image.bomb", width=width, height=height, max=limits.max_side)
    # Phones write multi-picture JPEGs (MPO: the photo plus a depth map or preview); Pillow calls those
    # animated, but only the first picture is shown or sent.
    if im.format != "MPO" and getattr(im, "n_frames", 1) > 1:
        raise InvalidImage("image.animated")

    orientation = _orientation(im)
    if orientation in _SWAPS_SIDES:
        width, height = height, width
    _check_sides(width, height, limits)  # as the user sees it, before paying for the decode

    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage("image.bomb", width=width, height=height, max=limits.max_side) from None
    except _DECODE_ERRORS:
        raise InvalidImage("image.corrupt") from None
    if fmt == "PNG" and orientation == 1 and "exif" in im.info:  # an eXIf chunk after the pixel data
        orientation = _orientation(im)

    pixels, changed = _normalise(im, orientation)
    if fmt == "PNG" and not _png_is_plain(data):
        changed = True  # 16-bit or sub-byte samples are 8-bit only once re-encoded
    if not changed and len(data) <= limits.reencode_bytes:
        return _result(data, fmt, pixels.width, pixels.height, reencoded=False)

    lossless = fmt in ("PNG", "BMP") or (fmt == "WEBP" and _webp_is_lossless(data))
    # Re-compressing the very same PNG pixels won't shrink them meaningfully: go straight to JPEG then.
    try_png = lossless and (changed or fmt != "PNG")
    icc = im.info.get("icc_profile") if _same_colour_family(im.mode, pixels.mode) else None
    source_jpeg = _jpeg_source_options(im) if fmt == "JPEG" and im.mode == pixels.mode else {}
    out, out_fmt, pixels = _reencode(pixels, limits, try_png=try_png, icc=icc, source_jpeg=source_jpeg)
    return _result(out, out_fmt, pixels.width, pixels.height, reencoded=True)


def _result(data: bytes, fmt: str, width: int, height: int, *, reencoded: bool) -> CheckedImage:
    return CheckedImage(
        data=data,
        mime=MIME_TYPES[fmt],
        format=fmt,
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
        reencoded=reencoded,
    )


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


def _normalise(im: Image.Image, orientation: int) -> tuple[Image.Image, bool]:
    """Upright, 8-bit RGB (or untouched 8-bit grey) without alpha; and whether the pixels changed."""
    out = im
    changed = False
    method = _TRANSPOSE.get(orientation)
    if method is not None:
        out = out.transpose(method)
        changed = True
    if out.mode in ("RGB", "L") and not out.has_transparency_data:
        return out, changed
    if out.mode.startswith("I"):
        # Pillow converts 16-bit grey to 8-bit by clipping (everything above 255 turns white): scale instead.
        out = out.convert("I").point(_scale_16_to_8).convert("L").convert("RGB")
    elif out.has_transparency_data:
        # The provider documents PNG without alpha; white is what most viewers show behind transparency.
        rgba = out.convert("RGBA")
        out = Image.new("RGB", rgba.size, WHITE)
        out.paste(rgba, mask=rgba.getchannel("A"))
    else:  # CMYK, palette, 1-bit, YCbCr, ...
        out = out.convert("RGB")
    return out, True


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
        pixels = pixels.resize(new_size, Image.Resampling.LANCZOS)
        attempts = [_jpeg_at(q, extra) for q in JPEG_QUALITIES[:3]]
    raise size_refusal(len(out), target)


def _jpeg_at(quality: int, extra: dict[str, object]) -> Callable[[Image.Image], bytes]:
    return lambda p: _encode(p, "JPEG", quality=quality, **extra)
