"""A stand-in for the model's output: a real, playable H.264 mp4 cross-fading the first frame into the last.

Pure (bytes in, bytes out) and CPU-bound, so callers run it in a thread. PyAV is imported on first use: the
sandbox starts without loading ffmpeg.

Sizes follow the provider's tiers: the pixel area of 832x480 / 1280x720 / 1920x1080 with the first frame's
aspect ratio, even sides (yuv420p needs them). The fade is blended directly in YCbCr (a linear blend commutes
with the linear colour transform), which is several times faster than blending RGB and converting every frame.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

TIER_AREAS = {"480P": 832 * 480, "720P": 1280 * 720, "1080P": 1920 * 1080}
_MIN_SIDE = 16


def frame_size(resolution: str, width: int, height: int) -> tuple[int, int]:
    """Output size for a tier and a first frame of `width` x `height`: same area as the tier, same aspect."""
    try:
        area = TIER_AREAS[resolution.upper()]
    except KeyError:
        raise ValueError(f"unknown resolution tier {resolution!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError("image sides must be positive")
    aspect = width / height
    out_w = max(_MIN_SIDE, round(math.sqrt(area * aspect) / 2) * 2)
    out_h = max(_MIN_SIDE, round(math.sqrt(area / aspect) / 2) * 2)
    return out_w, out_h


def _load(data: bytes, what: str) -> Image.Image:
    try:
        opened = Image.open(io.BytesIO(data))
        opened.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"the {what} image cannot be decoded: {exc}") from None
    image: Image.Image = ImageOps.exif_transpose(opened)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Flatten transparency on black, as a video has no alpha.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _limited_range_planes(image: Image.Image, size: tuple[int, int]) -> list[Image.Image]:
    """RGB -> Y, Cb (half size), Cr (half size) in the limited (TV) range H.264 players expect."""
    fitted = ImageOps.fit(image, size, Image.Resampling.BILINEAR)
    y, cb, cr = fitted.convert("YCbCr").split()  # BT.601 full range
    half = (size[0] // 2, size[1] // 2)
    luma_lut = [16 + round(v * 219 / 255) for v in range(256)]
    chroma_lut = [16 + round(v * 224 / 255) for v in range(256)]
    return [
        y.point(luma_lut),
        cb.resize(half, Image.Resampling.BILINEAR).point(chroma_lut),
        cr.resize(half, Image.Resampling.BILINEAR).point(chroma_lut),
    ]


def _fill_frame(av: Any, planes: list[Image.Image], width: int, height: int) -> Any:
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, image in zip(frame.planes, planes, strict=True):
        data = image.tobytes()
        stride = plane.line_size
        if stride != image.width:
            # ffmpeg pads rows for alignment: copy row by row into the padded layout.
            padded = bytearray(stride * image.height)
            for row in range(image.height):
                padded[row * stride : row * stride + image.width] = data[row * image.width : (row + 1) * image.width]
            data = bytes(padded)
        plane.update(data)
    return frame


def render_crossfade(
    first: bytes,
    last: bytes,
    *,
    resolution: str,
    seconds: float = 5,
    fps: int = 30,
) -> bytes:
    """An mp4 (H.264 yuv420p, moov first, silent) fading from `first` to `last` over `seconds`.

    Raises ValueError for undecodable images or an unknown tier.
    """
    import av  # lazily: loading ffmpeg costs start-up time the sandbox should not pay

    if seconds <= 0 or fps <= 0:
        raise ValueError("seconds and fps must be positive")
    first_image = _load(first, "first")
    last_image = _load(last, "last")
    width, height = frame_size(resolution, *first_image.size)
    start = _limited_range_planes(first_image, (width, height))
    end = _limited_range_planes(last_image, (width, height))
    frames = max(1, round(seconds * fps))

    # faststart rewrites the file after encoding, which needs a real file (not a BytesIO).
    with tempfile.TemporaryDirectory(prefix="kf2v-render-") as tmp:
        path = os.path.join(tmp, "out.mp4")
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "23"}
            stream.codec_context.color_range = 1  # MPEG / limited, matching the planes above
            stream.codec_context.colorspace = 6  # SMPTE 170M (BT.601), the matrix PIL used
            for index in range(frames):
                alpha = index / (frames - 1) if frames > 1 else 1.0
                planes = [Image.blend(a, b, alpha) for a, b in zip(start, end, strict=True)]
                frame = _fill_frame(av, planes, width, height)
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        with open(path, "rb") as handle:
            return handle.read()
