"""The sandbox's stand-in video: a real H.264 mp4, decoded back with PyAV and checked frame by frame."""

from __future__ import annotations

import io

import av
import pytest
from PIL import Image

from sandbox.video import TIER_AREAS, frame_size, render_crossfade

RED = (220, 30, 30)
BLUE = (30, 40, 210)


def image_bytes(color: tuple[int, ...], size: tuple[int, int], fmt: str = "PNG", mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt)
    return buf.getvalue()


def decode(data: bytes) -> tuple[dict[str, object], list[Image.Image]]:
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        info: dict[str, object] = {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": float(stream.average_rate) if stream.average_rate else None,
            "duration": container.duration / 1_000_000 if container.duration else None,
            "audio_streams": len(container.streams.audio),
        }
        frames = [frame.to_image() for frame in container.decode(video=0)]  # type: ignore[no-untyped-call]
    return info, frames


def rgb_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    pixel = image.convert("RGB").getpixel(xy)
    assert isinstance(pixel, tuple)
    return (int(pixel[0]), int(pixel[1]), int(pixel[2]))


def close(pixel: tuple[int, int, int], expected: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def test_five_second_720p_crossfade_is_a_real_h264_video() -> None:
    data = render_crossfade(image_bytes(RED, (1280, 720)), image_bytes(BLUE, (1280, 720)), resolution="720P")

    info, frames = decode(data)
    assert info["codec"] == "h264"
    assert info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"]) == (1280, 720)
    assert info["audio_streams"] == 0
    assert info["fps"] == pytest.approx(30)
    assert info["duration"] == pytest.approx(5.0, abs=0.05)
    assert len(frames) == 150
    centre = (640, 360)
    assert close(rgb_at(frames[0], centre), RED)
    assert close(rgb_at(frames[-1], centre), BLUE)
    middle = rgb_at(frames[75], centre)
    assert 80 < middle[0] < 170 and 80 < middle[2] < 170  # half way: a mix of both
    # faststart: the index (moov) precedes the media data, so players can start before the end arrives.
    assert data[4:8] == b"ftyp"
    assert 0 < data.find(b"moov") < data.find(b"mdat")


@pytest.mark.parametrize(
    ("resolution", "source", "expected_aspect"),
    [
        ("480P", (800, 600), 4 / 3),
        ("1080P", (1080, 1920), 9 / 16),
        ("720P", (1000, 1000), 1.0),
    ],
)
def test_size_follows_the_tier_area_and_the_first_frame_aspect(
    resolution: str, source: tuple[int, int], expected_aspect: float
) -> None:
    data = render_crossfade(image_bytes(RED, source), image_bytes(BLUE, (640, 480)), resolution=resolution, seconds=0.2)
    info, frames = decode(data)
    width, height = info["width"], info["height"]
    assert isinstance(width, int) and isinstance(height, int)
    assert width % 2 == 0 and height % 2 == 0
    assert width / height == pytest.approx(expected_aspect, rel=0.01)
    assert width * height == pytest.approx(TIER_AREAS[resolution], rel=0.02)
    assert len(frames) == 6


def test_frame_size_for_the_standard_shapes() -> None:
    assert frame_size("720P", 1920, 1080) == (1280, 720)
    assert frame_size("1080P", 1280, 720) == (1920, 1080)
    assert frame_size("480p", 9, 16)[0] < frame_size("480P", 9, 16)[1]
    with pytest.raises(ValueError, match="tier"):
        frame_size("4K", 100, 100)


def test_transparent_and_odd_inputs_still_render() -> None:
    first = image_bytes((0, 200, 0, 0), (301, 257), mode="RGBA")  # fully transparent green: flattened on black
    last = image_bytes((250, 250, 250), (400, 300), fmt="WEBP")
    _, frames = decode(render_crossfade(first, last, resolution="480P", seconds=0.2, fps=10))
    assert len(frames) == 2
    assert close(rgb_at(frames[0], (10, 10)), (0, 0, 0))
    assert close(rgb_at(frames[-1], (10, 10)), (250, 250, 250))


def test_undecodable_input_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="first image"):
        render_crossfade(b"not an image", image_bytes(BLUE, (320, 240)), resolution="480P")
    with pytest.raises(ValueError, match="tier"):
        render_crossfade(image_bytes(RED, (320, 240)), image_bytes(BLUE, (320, 240)), resolution="2K")


def test_wan27_sizes_are_floored_to_multiples_of_16_as_documented() -> None:
    # "750x1000 @720P -> 816x1104": https://help.aliyun.com/zh/model-studio/image-to-video-general-api-reference
    assert frame_size("720P", 750, 1000, multiple=16) == (816, 1104)
