"""Real test images and bad inputs, generated at test time (deterministic; nothing big is committed).

Every function returns the bytes of one file. `BAD_INPUTS` / `BAD_INPUT_KEYS` and `GOOD_INPUTS` let the
image tests and the end-to-end tests parametrise over the same corpus. The expected keys assume the
default limits (`DEFAULT_LIMITS`: 10 MB, 240-8000 px per side, re-encode above 7 MB).
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib
from collections.abc import Callable

from PIL import Image

from bot.jobs.images import ImageLimits

MIB = 1024 * 1024
DEFAULT_LIMITS = ImageLimits(max_bytes=10 * MIB, min_side=240, max_side=8000, reencode_bytes=7 * MIB)

RGB = tuple[int, int, int]
RED: RGB = (220, 20, 20)
GREEN: RGB = (20, 200, 20)
BLUE: RGB = (20, 20, 220)
YELLOW: RGB = (230, 230, 20)


def _save(im: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _quadrants(width: int, height: int, colours: tuple[RGB, RGB, RGB, RGB]) -> Image.Image:
    """Top-left, top-right, bottom-left, bottom-right blocks: any flip or turn is visible."""
    im = Image.new("RGB", (width, height))
    w2, h2 = width // 2, height // 2
    for colour, box in zip(
        colours, ((0, 0, w2, h2), (w2, 0, width, h2), (0, h2, w2, height), (w2, h2, width, height)), strict=True
    ):
        im.paste(colour, box)
    return im


def _noise(width: int, height: int, seed: int) -> Image.Image:
    return Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3))


def _photo_like(width: int, height: int, noise_mix: float, seed: int) -> Image.Image:
    """Smooth colour gradients plus grain: decodes like a camera photo, compresses like one (or worse)."""
    g = Image.linear_gradient("L").resize((width, height))
    base = Image.merge(
        "RGB", (g, g.transpose(Image.Transpose.ROTATE_180), g.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    )
    return Image.blend(base, _noise(width, height, seed), noise_mix)


# --- good pictures -------------------------------------------------------------------------------------


def good_png(width: int = 640, height: int = 480, color: RGB = RED) -> bytes:
    return _save(Image.new("RGB", (width, height), color), "PNG")


def good_jpeg(width: int = 640, height: int = 480, color: RGB = RED, quality: int = 90) -> bytes:
    return _save(Image.new("RGB", (width, height), color), "JPEG", quality=quality)


def good_webp(width: int = 640, height: int = 480, color: RGB = RED, lossless: bool = False) -> bytes:
    return _save(Image.new("RGB", (width, height), color), "WEBP", lossless=lossless)


def good_bmp(width: int = 640, height: int = 480, color: RGB = RED) -> bytes:
    return _save(Image.new("RGB", (width, height), color), "BMP")


def grey_jpeg(width: int = 640, height: int = 480) -> bytes:
    return _save(Image.linear_gradient("L").resize((width, height)), "JPEG", quality=90)


def palette_png(width: int = 640, height: int = 480) -> bytes:
    return _save(_quadrants(width, height, (RED, GREEN, BLUE, YELLOW)).convert("P"), "PNG")


def rgba_png(width: int = 640, height: int = 480) -> bytes:
    """Left half opaque blue, right half fully transparent."""
    im = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    im.paste((*BLUE, 255), (0, 0, width // 2, height))
    return _save(im, "PNG")


def mpo_jpeg(width: int = 640, height: int = 480) -> bytes:
    """A multi-picture JPEG as phones write it (the photo plus a second picture)."""
    first, second = Image.new("RGB", (width, height), RED), Image.new("RGB", (width, height), BLUE)
    return _save(first, "MPO", save_all=True, append_images=[second])


def cmyk_jpeg(width: int = 640, height: int = 480) -> bytes:
    """Print-style CMYK JPEG of pure red (no cyan, full magenta and yellow)."""
    return _save(Image.new("CMYK", (width, height), (0, 255, 255, 0)), "JPEG", quality=95)


def png16_alpha(width: int = 640, height: int = 480) -> bytes:
    """16-bit RGBA PNG (written by hand: Pillow can't write it). Left half opaque (0xFFFF, 0x8080, 0),
    which is (255, 128, 0) in 8 bits; right half fully transparent."""
    opaque = struct.pack(">HHHH", 0xFFFF, 0x8080, 0, 0xFFFF)
    clear = bytes(8)
    row = b"\x00" + opaque * (width // 2) + clear * (width - width // 2)
    return _png(width, height, 16, 6, zlib.compress(row * height, 9))


def png16_grey(width: int = 640, height: int = 480) -> bytes:
    """16-bit greyscale PNG at 0x8080 (mid grey, 128 in 8 bits; a clipping converter would make it 255)."""
    row = b"\x00" + struct.pack(">H", 0x8080) * width
    return _png(width, height, 16, 0, zlib.compress(row * height, 9))


def exif_rotated_jpeg(width: int = 480, height: int = 320) -> bytes:
    """Stored wide (480x320) with EXIF orientation 6, so it is shown tall (320x480). Stored quadrants
    TL red, TR green, BL blue, BR yellow; shown upright: TL blue, TR red, BL yellow, BR green."""
    im = _quadrants(width, height, (RED, GREEN, BLUE, YELLOW))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(im, "JPEG", quality=95, exif=exif.tobytes())


@functools.cache
def photo_jpeg(width: int = 4000, height: int = 3000) -> bytes:
    """A 12-megapixel photo-like JPEG of about 5 MB (the speed budget's reference)."""
    return _save(_photo_like(width, height, 0.18, seed=5), "JPEG", quality=90)


@functools.cache
def noisy_jpeg_over(n_bytes: int = 7 * MIB + MIB // 2) -> bytes:
    """A grainy photo-like JPEG just above n_bytes (noise compresses badly): the re-encode path."""
    width = 1600
    while True:
        height = width * 3 // 4
        data = _save(_photo_like(width, height, 0.7, seed=11), "JPEG", quality=95)
        if len(data) > n_bytes:
            return data
        width = int(width * (n_bytes * 1.05 / len(data)) ** 0.5) + 8


# --- bad inputs -----------------------------------------------------------------------------------------


def empty() -> bytes:
    return b""


def text_named_png() -> bytes:
    """A text file someone renamed to picture.png."""
    return b"This is not a picture, it only has a .png name.\n" * 20


def pdf_document() -> bytes:
    return b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + bytes(200) + b"%%EOF\n"


def random_binary() -> bytes:
    """Bytes with no recognisable signature."""
    return b"\x00\x13\x37" + random.Random(7).randbytes(4096)


def truncated_png() -> bytes:
    """A valid header and half the pixel data (an interrupted upload)."""
    data = _save(_noise(640, 480, seed=3), "PNG")
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    data = _save(_noise(640, 480, seed=4), "JPEG", quality=90)
    return data[: len(data) // 2]


def corrupt_header_png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dJUNK" + bytes(40)


def huge_file(n_bytes: int = 60 * MIB) -> bytes:
    """A real JPEG followed by padding up to n_bytes (60 MB by default): refused before any parsing."""
    head = good_jpeg(640, 480)
    return head + bytes(n_bytes - len(head))


@functools.cache
def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A decompression bomb: a valid 1-bit PNG of 400 megapixels in about 50 KB. Each row is a filter
    byte plus width/8 zero bytes, so the whole pixel stream is zeros; it is compressed in 1 MB pieces."""
    raw = (1 + (width + 7) // 8) * height
    compressor = zlib.compressobj(9)
    zeros = bytes(MIB)
    parts = [compressor.compress(zeros) for _ in range(raw // MIB)]
    parts.append(compressor.compress(bytes(raw % MIB)))
    parts.append(compressor.flush())
    return _png(width, height, 1, 0, b"".join(parts))


@functools.cache
def transparent_64mp_png(width: int = 8000, height: int = 8000) -> bytes:
    """Issue 17's 0.3 MB picture: a valid 8-bit RGBA PNG of 64 megapixels (the most the provider takes), fully
    transparent. Decoded it is 256 MB, and flattened onto white another 256 MB: over the memory budget."""
    raw = (1 + width * 4) * height
    compressor = zlib.compressobj(9)
    zeros = bytes(MIB)
    parts = [compressor.compress(zeros) for _ in range(raw // MIB)]
    parts.append(compressor.compress(bytes(raw % MIB)))
    parts.append(compressor.flush())
    return _png(width, height, 8, 6, b"".join(parts))


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (320, 320), c) for c in (RED, BLUE, GREEN)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def animated_webp() -> bytes:
    frames = [Image.new("RGB", (320, 320), c) for c in (RED, BLUE, GREEN)]
    return _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0)


def apng() -> bytes:
    frames = [Image.new("RGB", (320, 320), c) for c in (RED, BLUE, GREEN)]
    return _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100, loop=0)


def tiff_image() -> bytes:
    return _save(Image.new("RGB", (320, 320), RED), "TIFF")


def heic_photo() -> bytes:
    """An iPhone HEIC as far as its signature goes (Pillow can't write HEIC; the check stops at the box)."""
    ftyp = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    return ftyp + random.Random(9).randbytes(2048)


def tiny_100() -> bytes:
    return good_png(100, 100)


def too_wide_png() -> bytes:
    """8001 x 240: one pixel wider than the provider takes (few pixels, so not a bomb)."""
    return good_png(8001, 240)


BAD_INPUTS: dict[str, Callable[[], bytes]] = {
    "empty": empty,
    "huge_file": huge_file,
    "text_named_png": text_named_png,
    "pdf_document": pdf_document,
    "random_binary": random_binary,
    "animated_gif": animated_gif,
    "tiff_image": tiff_image,
    "heic_photo": heic_photo,
    "animated_webp": animated_webp,
    "apng": apng,
    "truncated_png": truncated_png,
    "truncated_jpeg": truncated_jpeg,
    "corrupt_header_png": corrupt_header_png,
    "tiny_100": tiny_100,
    "too_wide_png": too_wide_png,
    "bomb_png": bomb_png,
    "transparent_64mp_png": transparent_64mp_png,
}

BAD_INPUT_KEYS: dict[str, str] = {
    "empty": "image.empty",
    "huge_file": "image.too_large",
    "text_named_png": "image.not_an_image",
    "pdf_document": "image.not_an_image",
    "random_binary": "image.unrecognised",
    "animated_gif": "image.unsupported_format",  # GIF is refused as a format, animated or not
    "tiff_image": "image.unsupported_format",
    "heic_photo": "image.unsupported_format",
    "animated_webp": "image.animated",
    "apng": "image.animated",
    "truncated_png": "image.corrupt",
    "truncated_jpeg": "image.corrupt",
    "corrupt_header_png": "image.corrupt",
    "tiny_100": "image.too_small",
    "too_wide_png": "image.too_large_dimensions",
    "bomb_png": "image.bomb",
    "transparent_64mp_png": "image.over_memory",
}

GOOD_INPUTS: dict[str, Callable[[], bytes]] = {
    "png": good_png,
    "jpeg": good_jpeg,
    "webp": good_webp,
    "webp_lossless": functools.partial(good_webp, lossless=True),
    "bmp": good_bmp,
    "grey_jpeg": grey_jpeg,
    "palette_png": palette_png,
    "rgba_png": rgba_png,
    "mpo_jpeg": mpo_jpeg,
    "cmyk_jpeg": cmyk_jpeg,
    "png16_alpha": png16_alpha,
    "png16_grey": png16_grey,
    "exif_rotated_jpeg": exif_rotated_jpeg,
}
