"""Story keyframes are normalised once, at admission, to the first frame's size and aspect ratio."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import pytest
from PIL import Image

from bot.jobs.story.frames import FrameError, FrameTooLarge, normalise_frames


def encoded(size: tuple[int, int], colour: tuple[int, int, int] = (200, 10, 10), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_every_frame_takes_the_first_frames_size_and_the_first_is_untouched() -> None:
    first = encoded((640, 360), fmt="JPEG")
    frames = [first, encoded((1000, 1000)), encoded((360, 640)), encoded((1280, 720))]

    result = normalise_frames(frames)

    assert result[0].data == first and result[0].changed is False
    assert [opened(f.data).size for f in result] == [(640, 360)] * 4
    assert [f.changed for f in result[1:]] == [True, True, True]
    # The first frame is a JPEG, so re-encoded frames are too.
    assert {opened(f.data).format for f in result[1:]} == {"JPEG"}
    assert all(f.content_type == "image/jpeg" for f in result)


def test_cropping_is_centred_not_squashed() -> None:
    # A 4:1 strip whose middle half is blue and whose outer quarters are white: cropping it to 16:9 keeps
    # its centre 178 of 400 columns (all blue); squashing it would keep white at both edges.
    square = Image.new("RGB", (400, 100), (255, 255, 255))
    square.paste((0, 0, 255), (100, 0, 300, 100))
    buf = io.BytesIO()
    square.save(buf, "PNG")

    result = normalise_frames([encoded((160, 90)), buf.getvalue(), encoded((160, 90))])

    fitted = opened(result[1].data).convert("RGB")
    assert fitted.size == (160, 90)
    assert fitted.getpixel((80, 45)) == (0, 0, 255)
    for x in (1, 158):
        edge = fitted.getpixel((x, 45))
        assert isinstance(edge, tuple) and edge[2] > 200 and edge[0] < 40  # still within the blue band


def test_a_frame_of_the_right_size_is_kept_as_sent() -> None:
    same = encoded((320, 240), (1, 2, 3))
    result = normalise_frames([encoded((320, 240)), same, encoded((320, 240), (9, 9, 9))])
    assert result[1].data == same and result[1].changed is False
    assert result[1].content_type == "image/png"


@pytest.mark.parametrize("count", [2, 7])
def test_a_story_takes_three_to_six_frames(count: int) -> None:
    with pytest.raises(ValueError, match=f"not {count}"):
        normalise_frames([encoded((64, 64))] * count)


def test_an_undecodable_frame_is_named_by_its_position() -> None:
    with pytest.raises(FrameError) as caught:
        normalise_frames([encoded((64, 64)), encoded((64, 64)), b"not an image"])
    assert caught.value.index == 2
    assert "frame 3" in str(caught.value)


# --- memory (issue 17): only what changes is decoded, reduced on load, within the shared budget ------------


def photo(size: tuple[int, int]) -> bytes:
    """A JPEG whose left half is red and right half blue (the centre crop must keep both, split in the middle)."""
    im = Image.new("RGB", size, (220, 20, 20))
    im.paste((20, 20, 220), (size[0] // 2, 0, size[0], size[1]))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_a_big_jpeg_is_decoded_reduced_to_what_the_fit_needs_within_the_budget() -> None:
    held: list[int] = []

    @contextlib.contextmanager
    def hold(n: int) -> Iterator[None]:
        held.append(n)
        yield

    frames = [encoded((640, 360), fmt="JPEG"), photo((4000, 3000)), encoded((640, 360), fmt="JPEG")]
    result = normalise_frames(frames, memory_budget=64 * 1024 * 1024, hold=hold)

    # Only the one frame that changes is decoded; cropped to 4000x2250 it is fitted to 640x360 from a 1/4
    # decode: 1000x750 (3.0 MB) + the resize's pass (1.4 MB) + the result (0.9 MB) + its encoding (1.4 MB),
    # where the whole picture alone is 48 MB.
    assert held == [1000 * 750 * 4 + 640 * 562 * 4 + 640 * 360 * 4 + 2 * 3 * 640 * 360]
    fitted = opened(result[1].data).convert("RGB")
    assert fitted.size == (640, 360)
    red, blue = fitted.getpixel((160, 180)), fitted.getpixel((480, 180))
    assert isinstance(red, tuple) and isinstance(blue, tuple)
    assert red[0] > 180 and red[2] < 60 and blue[2] > 180 and blue[0] < 60


def test_a_frame_whose_fit_alone_is_over_the_budget_is_refused_by_position() -> None:
    frames = [encoded((2000, 2000)), encoded((64, 64)), encoded((1500, 1000))]
    with pytest.raises(FrameTooLarge) as caught:
        normalise_frames(frames, memory_budget=8 * 1024 * 1024)  # a 2000x2000 result alone is 16 MB
    assert caught.value.index == 1 and caught.value.target == (2000, 2000)
