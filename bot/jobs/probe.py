"""What a driving audio file or a clip to continue really is: format, length in seconds, size (and clip sides).

Run on the bytes a member attached (or a video the bot delivered) BEFORE any money is reserved, so a file the
provider would refuse costs nothing. The bytes are untrusted: the size limit is checked before anything is
parsed, the format comes from magic numbers (never the file name or Discord's content type), and every way a
parser can fail on junk ends in `InvalidMedia("media.corrupt")`, never in a crash.

Lengths and headers are read with `mutagen` (pure Python, no ffmpeg); the clip's picture sides come from the
video track's `tkhd` box, found by a small bounded box walker (no recursion, no copies). The limits are the catalog's
(`TimedMediaLimits`: formats, min/max seconds, max bytes, sides), so a model added by the override file gets
its own checks without code.
"""

from __future__ import annotations

import io
import logging
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from mutagen import MutagenError
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.wave import WAVE

from bot.catalog import TimedMediaLimits
from bot.errors import BotError

log = logging.getLogger(__name__)

MediaKind = Literal["audio", "clip"]

# What mutagen and the box walker raise on damaged input besides MutagenError (truncated structs, absurd
# sizes, bad indexes). Anything else is a bug and is left to surface.
_PARSE_ERRORS = (
    MutagenError,
    struct.error,
    ValueError,
    IndexError,
    KeyError,
    EOFError,
    OverflowError,
    OSError,
    RecursionError,  # mutagen walks nested boxes recursively: a file of 10 000 nested moov boxes
)
# ISO-BMFF brands that mean QuickTime (.mov); every other brand with an `ftyp` box is read as mp4.
_QUICKTIME_BRANDS = {b"qt  "}
# Top-level boxes an old QuickTime file may start with instead of `ftyp`.
_QUICKTIME_FIRST_BOXES = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


class InvalidMedia(BotError):
    """An audio file or clip the model can't take (format, length, size, sides, damaged)."""

    key = "error.invalid_media"


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What probing found in an audio file or clip: format, length (seconds), size (bytes), clip sides."""

    kind: MediaKind
    format: str  # "wav", "mp3", "mp4", "mov": the catalog's format names
    seconds: float
    size: int
    width: int | None = None  # clips only: the video track's display size
    height: int | None = None
    has_audio: bool = False  # clips only: whether the clip carries a sound track

    @property
    def content_type(self) -> str:
        """The MIME type to upload the file with."""
        return _CONTENT_TYPES[self.format]

    @property
    def extension(self) -> str:
        """The file extension to store it with (the format name)."""
        return self.format


_CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "mp4": "video/mp4", "mov": "video/quicktime"}


def sniff_audio(data: bytes) -> str | None:
    """'wav' / 'mp3' from the first bytes, else None."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3":
        return "mp3"
    # An MPEG audio frame sync: 11 set bits, layer III (bits 01), and not the reserved version (01).
    if len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0 and (data[1] & 0x06) == 0x02:
        return "mp3" if (data[1] & 0x18) != 0x08 else None
    return None


def sniff_clip(data: bytes) -> str | None:
    """'mp4' / 'mov' from the first box, else None."""
    if len(data) < 12:
        return None
    box = data[4:8]
    if box == b"ftyp":
        return "mov" if data[8:12] in _QUICKTIME_BRANDS else "mp4"
    if box in _QUICKTIME_FIRST_BOXES:
        return "mov"
    return None


def probe_audio(data: bytes, limits: TimedMediaLimits) -> MediaInfo:
    """Check a driving audio file against `limits`; returns what it is or raises `InvalidMedia`."""
    _check_size(data, limits, "audio")
    fmt = sniff_audio(data)
    if fmt is None or fmt not in limits.formats:
        raise InvalidMedia("media.audio_format", allowed=_names(limits.formats))
    try:
        seconds = _wav_seconds(data) if fmt == "wav" else _mp3_seconds(data)
    except _PARSE_ERRORS as exc:
        log.debug("audio probe: %s file unreadable (%s)", fmt, type(exc).__name__)
        raise InvalidMedia("media.corrupt", kind="audio") from None
    info = MediaInfo("audio", fmt, seconds, len(data))
    _check_length(info, limits)
    return info


def probe_clip(data: bytes, limits: TimedMediaLimits) -> MediaInfo:
    """Check a clip to continue against `limits`; returns what it is or raises `InvalidMedia`."""
    _check_size(data, limits, "clip")
    fmt = sniff_clip(data)
    if fmt is None or fmt not in limits.formats:
        raise InvalidMedia("media.clip_format", allowed=_names(limits.formats))
    try:
        seconds, width, height, has_audio = _movie_facts(data)
    except _PARSE_ERRORS as exc:
        log.debug("clip probe: %s file unreadable (%s)", fmt, type(exc).__name__)
        raise InvalidMedia("media.corrupt", kind="clip") from None
    if width is None or height is None:
        raise InvalidMedia("media.clip_no_video")
    info = MediaInfo("clip", fmt, seconds, len(data), width, height, has_audio)
    _check_length(info, limits)
    _check_sides(width, height, limits)
    return info


# --- checks ---------------------------------------------------------------------------------------------


def _check_size(data: bytes, limits: TimedMediaLimits, kind: MediaKind) -> None:
    if not data:
        raise InvalidMedia("media.empty", kind=kind)
    if len(data) > limits.max_bytes:
        raise InvalidMedia(
            "media.too_large", kind=kind, size_mb=_mb(len(data), up=True), limit_mb=_mb(limits.max_bytes, up=False)
        )


def _check_length(info: MediaInfo, limits: TimedMediaLimits) -> None:
    # A file that claims no length (or a non-finite one) says nothing usable: treat it as damaged.
    if not 0 < info.seconds < 1e7:
        raise InvalidMedia("media.corrupt", kind=info.kind)
    shown = round(info.seconds, 1)
    if info.seconds > limits.max_seconds:
        raise InvalidMedia("media.too_long", kind=info.kind, seconds=shown, max=_secs(limits.max_seconds))
    if info.seconds < limits.min_seconds:
        raise InvalidMedia("media.too_short", kind=info.kind, seconds=shown, min=_secs(limits.min_seconds))


def _check_sides(width: int, height: int, limits: TimedMediaLimits) -> None:
    if limits.min_side is not None and min(width, height) < limits.min_side:
        raise InvalidMedia("media.clip_small", width=width, height=height, min=limits.min_side)
    if limits.max_side is not None and max(width, height) > limits.max_side:
        raise InvalidMedia("media.clip_large", width=width, height=height, max=limits.max_side)
    if limits.max_aspect is not None and max(width, height) > limits.max_aspect * min(width, height):
        raise InvalidMedia("media.clip_aspect", width=width, height=height, max=_secs(limits.max_aspect))


# --- parsers --------------------------------------------------------------------------------------------


def _stream_info(file_type: Callable[..., Any], data: bytes) -> Any:
    """mutagen's `info` (length, bitrate) of one file type; mutagen ships no precise types, hence Any."""
    return file_type(io.BytesIO(data)).info


def _wav_seconds(data: bytes) -> float:
    info = _stream_info(WAVE, data)
    seconds = float(info.length)
    # The header's data size may promise more than the file holds: count only the bytes really there.
    if info.bitrate:
        seconds = min(seconds, len(data) * 8 / info.bitrate)
    return seconds


def _mp3_seconds(data: bytes) -> float:
    return float(_stream_info(MP3, data).length)


def _movie_facts(data: bytes) -> tuple[float, int | None, int | None, bool]:
    """(seconds from mvhd, the video track's width and height from its tkhd, whether a sound track exists)."""
    seconds = float(_stream_info(MP4, data).length)
    width = height = None
    has_audio = False
    view = memoryview(data)
    moov = next((body for name, body in _boxes(view) if name == b"moov"), None)
    for name, trak in _boxes(moov) if moov is not None else ():
        if name != b"trak":
            continue
        handler = _track_handler(trak)
        if handler == b"soun":
            has_audio = True
        elif handler == b"vide" and width is None:
            width, height = _track_size(trak)
    return seconds, width, height, has_audio


def _boxes(view: memoryview) -> Iterator[tuple[bytes, memoryview]]:
    """The boxes directly inside `view`: (type, body). Stops at the first box whose size doesn't fit."""
    offset = 0
    while offset + 8 <= len(view):
        size, name = struct.unpack_from(">I4s", view, offset)
        header = 8
        if size == 1 and offset + 16 <= len(view):
            (size,) = struct.unpack_from(">Q", view, offset + 8)
            header = 16
        elif size == 0:
            size = len(view) - offset  # "to the end of the file"
        if size < header or offset + size > len(view):
            return
        yield name, view[offset + header : offset + size]
        offset += size


def _child(view: memoryview, *path: bytes) -> memoryview | None:
    for wanted in path:
        found = next((body for name, body in _boxes(view) if name == wanted), None)
        if found is None:
            return None
        view = found
    return view


def _track_handler(trak: memoryview) -> bytes | None:
    hdlr = _child(trak, b"mdia", b"hdlr")
    # version/flags (4), pre_defined (4), handler_type (4)
    return bytes(hdlr[8:12]) if hdlr is not None and len(hdlr) >= 12 else None


def _track_size(trak: memoryview) -> tuple[int | None, int | None]:
    tkhd = _child(trak, b"tkhd")
    if tkhd is None or len(tkhd) < 84:  # the version-0 tkhd body is 84 bytes, version 1 is 96
        return None, None
    # width and height are the last 8 bytes of tkhd, 16.16 fixed point (ISO/IEC 14496-12, 8.3.2).
    width, height = struct.unpack_from(">II", tkhd, len(tkhd) - 8)
    return width >> 16, height >> 16


# --- message values -------------------------------------------------------------------------------------


def _names(formats: tuple[str, ...]) -> str:
    return ", ".join(f.upper() for f in formats)


def _secs(value: float) -> str:
    return f"{value:g}"


def _mb(size: int, *, up: bool) -> float:
    """Megabytes to one decimal, rounded so a file just over the limit never reads as equal to it."""
    tenths = size * 10 / (1024 * 1024)
    return (math.ceil(tenths) if up else math.floor(tenths)) / 10
