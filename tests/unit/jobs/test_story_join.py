"""Story joins on real mp4s rendered by the sandbox, decoded back and checked frame by frame.

The seam rule under test (bot.jobs.story.join): joined frames = sum of the segments' frames - (segments - 1);
output frame n_0 + ... + n_k - (k + 1) is keyframe k+1.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
from PIL import Image, ImageStat

from bot.jobs.story.join import JoinError, expected_frames, join_segments, seam_indices
from sandbox.video import render_crossfade, render_video

KEYFRAMES = [(220, 30, 30), (30, 200, 40), (30, 40, 210), (235, 235, 235)]
FPS = 8  # few frames per segment: neighbouring frames differ by ~27 levels, so an off-by-one seam shows
TOLERANCE = 10  # H.264 + limited-range conversion moves a flat colour's mean by a few levels


def png(color: tuple[int, int, int], size: tuple[int, int] = (640, 360)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def decoded(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as container:
        return [frame.to_image() for frame in container.decode(video=0)]  # type: ignore[no-untyped-call]


def frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        samples = 0
        rate = 0
        for frame in container.decode(audio=0):
            samples += frame.samples
            rate = frame.sample_rate
        return samples / rate


def mean(image: Image.Image) -> list[float]:
    return list(ImageStat.Stat(image.convert("RGB")).mean)


def assert_colour(image: Image.Image, colour: tuple[int, int, int]) -> None:
    got = mean(image)
    assert all(abs(g - c) <= TOLERANCE for g, c in zip(got, colour, strict=True)), (got, colour)


def crossfades(tmp_path: Path, resolutions: list[str], seconds: float = 1.25) -> list[Path]:
    return [
        write(
            tmp_path,
            f"segment{k}.mp4",
            render_crossfade(png(KEYFRAMES[k]), png(KEYFRAMES[k + 1]), resolution=res, seconds=seconds, fps=FPS),
        )
        for k, res in enumerate(resolutions)
    ]


def assert_seams(frames: list[Image.Image], counts: list[int]) -> None:
    assert_colour(frames[0], KEYFRAMES[0])
    for k, index in enumerate(seam_indices(counts)):
        assert_colour(frames[index], KEYFRAMES[k + 1])
    assert_colour(frames[-1], KEYFRAMES[len(counts)])
    # The checks discriminate: the frames either side of a seam are clearly not the keyframe.
    for k, index in enumerate(seam_indices(counts)):
        for neighbour in (frames[index - 1], frames[index + 1]):
            assert max(abs(g - c) for g, c in zip(mean(neighbour), KEYFRAMES[k + 1], strict=True)) > TOLERANCE


def test_the_seam_rule() -> None:
    assert expected_frames([30, 30, 30]) == 88
    assert seam_indices([30, 30, 30]) == [29, 58]
    assert expected_frames([10, 20]) == 29
    assert seam_indices([10, 20]) == [9]


def test_matching_segments_are_remuxed_with_the_seam_duplicates_dropped(tmp_path: Path) -> None:
    segments = crossfades(tmp_path, ["480P", "480P", "480P"])
    counts = [frame_count(path) for path in segments]
    out = tmp_path / "story" / "joined.mp4"

    result = join_segments(segments, out)

    assert result.video_remuxed is True
    assert result.audio_remuxed is None
    frames = decoded(out)
    assert len(frames) == expected_frames(counts) == result.frames == sum(counts) - 2
    assert_seams(frames, counts)
    assert result.seconds == pytest.approx(len(frames) / FPS, abs=1.5 / FPS)
    assert [p.name for p in out.parent.iterdir()] == ["joined.mp4"]  # no temporary file left behind


def test_a_segment_that_differs_makes_the_join_re_encode(tmp_path: Path) -> None:
    segments = crossfades(tmp_path, ["480P", "720P", "480P"])
    counts = [frame_count(path) for path in segments]
    out = tmp_path / "joined.mp4"

    result = join_segments(segments, out)

    assert result.video_remuxed is False
    frames = decoded(out)
    assert len(frames) == expected_frames(counts)
    assert {f.size for f in frames} == {decoded(segments[0])[0].size}  # the first segment's size throughout
    assert_seams(frames, counts)


def test_sound_is_remuxed_and_follows_the_kept_picture(tmp_path: Path) -> None:
    segments = [
        write(
            tmp_path,
            f"sound{k}.mp4",
            render_video(png(KEYFRAMES[k]), png(KEYFRAMES[k + 1]), resolution="480P", seconds=1, fps=FPS),
        )
        for k in range(3)
    ]
    counts = [frame_count(path) for path in segments]
    out = tmp_path / "joined.mp4"

    result = join_segments(segments, out)

    assert result.video_remuxed is True
    assert result.audio_remuxed is True
    frames = decoded(out)
    assert len(frames) == expected_frames(counts)
    assert_seams(frames, counts)
    # A remux cuts sound at packet boundaries: under one AAC frame (1024 samples) short per seam, never longer.
    picture = len(frames) / FPS
    assert picture - 3 * 1024 / 48_000 <= audio_seconds(out) <= picture + 1024 / 48_000


def test_a_silent_segment_among_sounding_ones_re_encodes_the_sound_with_silence(tmp_path: Path) -> None:
    sounding = [
        render_video(png(KEYFRAMES[k]), png(KEYFRAMES[k + 1]), resolution="480P", seconds=1, fps=FPS, size_multiple=2)
        for k in (0, 2)
    ]
    silent = render_crossfade(png(KEYFRAMES[1]), png(KEYFRAMES[2]), resolution="480P", seconds=1, fps=FPS)
    segments = [
        write(tmp_path, "a.mp4", sounding[0]),
        write(tmp_path, "b.mp4", silent),
        write(tmp_path, "c.mp4", sounding[1]),
    ]
    counts = [frame_count(path) for path in segments]
    out = tmp_path / "joined.mp4"

    result = join_segments(segments, out)

    assert result.audio_remuxed is False
    frames = decoded(out)
    assert len(frames) == expected_frames(counts)
    assert_seams(frames, counts)
    # Re-encoded sound is cut and padded to the kept picture exactly (plus the encoder's last partial frame).
    assert audio_seconds(out) == pytest.approx(len(frames) / FPS, abs=1024 / 48_000)


def test_an_unreadable_segment_fails_the_join_and_leaves_nothing(tmp_path: Path) -> None:
    segments = crossfades(tmp_path, ["480P"])
    broken = write(tmp_path, "broken.mp4", b"\x00\x00\x00\x18ftypmp42 not really a video")
    out = tmp_path / "out" / "joined.mp4"

    with pytest.raises(JoinError):
        join_segments([segments[0], broken], out)

    assert not out.exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".part")]


def test_an_existing_video_is_replaced_whole(tmp_path: Path) -> None:
    segments = crossfades(tmp_path, ["480P", "480P"], seconds=0.75)
    out = write(tmp_path, "joined.mp4", b"an earlier join")

    join_segments(segments, out)

    assert len(decoded(out)) == expected_frames([frame_count(p) for p in segments])
