"""A stand-in for the model's output: a real, playable H.264 mp4 cross-fading the first frame into the last.

Pure (bytes in, bytes out) and CPU-bound, so callers run it in a thread. PyAV is imported on first use: the
sandbox starts without loading ffmpeg.

Sizes follow the provider's tiers: the pixel area of 832x480 / 1280x720 / 1920x1080 with the first frame's
aspect ratio, even sides (yuv420p needs them); wan2.7 rounds sides down to multiples of 16 ("750x1000 @720P ->
816x1104", https://help.aliyun.com/zh/model-studio/image-to-video-general-api-reference).

`render_video` adds what wan2.7 returns: any duration, an AAC soundtrack (the driving audio, cut or padded
with silence to the video's length as the provider does, or a generated tone), and for a continued clip the
whole video: the input clip's frames first, then the new part. The fade is blended directly in YCbCr (a linear
blend commutes with the linear colour transform), which is several times faster than blending RGB and converting
every frame.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

TIER_AREAS = {"480P": 832 * 480, "720P": 1280 * 720, "1080P": 1920 * 1080}
_MIN_SIDE = 16


def frame_size(resolution: str, width: int, height: int, multiple: int = 2) -> tuple[int, int]:
    """Output size for a tier and a first frame of `width` x `height`: same area as the tier, same aspect.

    `multiple` 2 rounds to even sides (kf2v); 16 rounds down to multiples of 16 (wan2.7).
    """
    if multiple != 2:
        return _floored_size(resolution, width, height, multiple)
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


def _floored_size(resolution: str, width: int, height: int, multiple: int) -> tuple[int, int]:
    try:
        area = TIER_AREAS[resolution.upper()]
    except KeyError:
        raise ValueError(f"unknown resolution tier {resolution!r}") from None
    if width <= 0 or height <= 0 or multiple < 2 or multiple % 2:
        raise ValueError("image sides must be positive and the multiple even")
    aspect = width / height
    out_w = max(multiple, math.floor(math.sqrt(area * aspect) / multiple) * multiple)
    out_h = max(multiple, math.floor(math.sqrt(area / aspect) / multiple) * multiple)
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


AUDIO_RATE = 48_000
_TONE_HZ = 440.0
_TONE_LEVEL = 6000  # of 32767: audible, not loud
_AUDIO_CHUNK = 1024  # samples per AAC frame


def media_seconds(data: bytes) -> float:
    """Length of an audio or video file (its container's duration, else its longest stream)."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if container.duration is not None:
                return float(container.duration) / 1_000_000
            longest = 0.0
            for stream in container.streams:
                if stream.duration is not None and stream.time_base is not None:
                    longest = max(longest, float(stream.duration * stream.time_base))
            return longest
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise ValueError(f"the media file cannot be read: {type(exc).__name__}") from None


def video_size(data: bytes) -> tuple[int, int]:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            return int(stream.codec_context.width), int(stream.codec_context.height)
    except (av.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise ValueError(f"the clip cannot be read: {type(exc).__name__}") from None


def _decoded_pcm(data: bytes, samples: int) -> bytes:
    """The audio as 48 kHz mono s16, cut or padded with silence to exactly `samples`."""
    import av

    out = bytearray()
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
            for frame in container.decode(audio=0):
                for converted in resampler.resample(frame):
                    out += bytes(converted.planes[0])[: converted.samples * 2]
                if len(out) >= samples * 2:
                    break
    except (av.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise ValueError(f"the audio cannot be decoded: {type(exc).__name__}") from None
    return bytes(out[: samples * 2]).ljust(samples * 2, b"\0")


def _tone_pcm(samples: int) -> bytes:
    step = 2 * math.pi * _TONE_HZ / AUDIO_RATE
    return b"".join(int(_TONE_LEVEL * math.sin(step * i)).to_bytes(2, "little", signed=True) for i in range(samples))


def _encode_audio(av: Any, container: Any, stream: Any, pcm: bytes) -> None:
    samples = len(pcm) // 2
    for offset in range(0, samples, _AUDIO_CHUNK):
        count = min(_AUDIO_CHUNK, samples - offset)
        frame = av.AudioFrame(format="s16", layout="mono", samples=count)
        frame.planes[0].update(pcm[offset * 2 : (offset + count) * 2])
        frame.sample_rate = AUDIO_RATE
        frame.pts = offset
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _clip_images(data: bytes) -> Iterator[tuple[float, Image.Image]]:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            for frame in container.decode(video=0):
                yield (float(frame.time or 0.0), frame.to_image())  # type: ignore[no-untyped-call]
    except (av.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise ValueError(f"the clip cannot be decoded: {type(exc).__name__}") from None


def render_video(
    first: bytes | None,
    last: bytes | None,
    *,
    resolution: str,
    seconds: int,
    fps: int = 30,
    audio: bytes | None = None,
    clip: bytes | None = None,
    size_multiple: int = 16,
) -> bytes:
    """An mp4 (H.264 + AAC, moov first) of exactly `seconds`: what wan2.7 returns.

    Video: with `clip`, its frames for its own length (at most `seconds`), then a fade from its last frame to
    `last` (or to its negative); otherwise a fade from `first` to `last` (or to its negative). Sound: `audio`
    decoded, cut at `seconds` or padded with silence; else a tone. Raises ValueError for undecodable input.
    """
    import av

    if seconds <= 0 or fps <= 0:
        raise ValueError("seconds and fps must be positive")
    if clip is None and first is None:
        raise ValueError("a first frame or a clip is needed")
    total_frames = seconds * fps
    samples = seconds * AUDIO_RATE
    pcm = _decoded_pcm(audio, samples) if audio is not None else _tone_pcm(samples)
    if clip is not None:
        source_size = video_size(clip)
    else:
        assert first is not None
        start_image = _load(first, "first")
        source_size = start_image.size
    width, height = frame_size(resolution, *source_size, multiple=size_multiple)

    with tempfile.TemporaryDirectory(prefix="kf2v-render-") as tmp:
        path = os.path.join(tmp, "out.mp4")
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "26"}
            stream.codec_context.color_range = 1
            stream.codec_context.colorspace = 6
            # Every stream before the first packet: the muxer writes its header then.
            sound = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
            emitted = 0

            def emit(planes: list[Image.Image]) -> None:
                nonlocal emitted
                frame = _fill_frame(av, planes, width, height)
                frame.pts = emitted
                container.mux(stream.encode(frame))
                emitted += 1

            if clip is not None:
                # The whole video: the clip's frames first, resampled to `fps` by their timestamps.
                held: Image.Image | None = None
                for moment, image in _clip_images(clip):
                    held = image
                    planes = _limited_range_planes(image.convert("RGB"), (width, height))
                    while emitted < total_frames and emitted / fps <= moment + 0.5 / fps:
                        emit(planes)
                    if emitted >= total_frames:
                        break
                if held is None:
                    raise ValueError("the clip has no video frames")
                start_image = held.convert("RGB")
            end_image = _load(last, "last") if last is not None else ImageOps.invert(start_image)
            start = _limited_range_planes(start_image, (width, height))
            end = _limited_range_planes(end_image, (width, height))
            remaining = total_frames - emitted
            for index in range(remaining):
                alpha = index / (remaining - 1) if remaining > 1 else 1.0
                emit([Image.blend(a, b, alpha) for a, b in zip(start, end, strict=True)])
            container.mux(stream.encode(None))
            _encode_audio(av, container, sound, pcm)
        with open(path, "rb") as handle:
            return handle.read()
