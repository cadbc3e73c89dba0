"""The media probe on real files: WAV from the `wave` module, MP3 and MOV encoded with PyAV, MP4 from the sandbox
renderer; limits from the catalog's wan2.7 entry; junk and lies end in InvalidMedia, never a crash."""

from __future__ import annotations

import io
import math
import os
import struct
import tempfile
import wave
from dataclasses import replace

import av
import pytest
from PIL import Image

from bot.catalog import TimedMediaLimits, load_catalog
from bot.jobs.probe import InvalidMedia, probe_audio, probe_clip, sniff_audio, sniff_clip
from sandbox.video import render_video

WAN27 = load_catalog().model("wan2.7-i2v")
assert WAN27.inputs.audio is not None and WAN27.inputs.clip is not None
AUDIO: TimedMediaLimits = WAN27.inputs.audio
CLIP: TimedMediaLimits = WAN27.inputs.clip


def make_wav(seconds: float, rate: int = 16_000) -> bytes:
    frames = int(seconds * rate)
    pcm = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(frames))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def make_mp3(seconds: float, rate: int = 22_050) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "a.mp3")
        with av.open(path, "w", format="mp3") as container:
            stream = container.add_stream("libmp3lame", rate=rate)
            stream.layout = "mono"
            samples = int(seconds * rate)
            chunk = 1152
            for start in range(0, samples, chunk):
                n = min(chunk, samples - start)
                pcm = struct.pack(f"<{n}h", *(int(6000 * math.sin(i / 8)) for i in range(start, start + n)))
                frame = av.AudioFrame(format="s16", layout="mono", samples=n)
                frame.planes[0].update(pcm)
                frame.sample_rate = rate
                frame.pts = start
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        with open(path, "rb") as handle:
            return handle.read()


def make_image(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 40)).save(out, "PNG")
    return out.getvalue()


def make_mov(seconds: int, width: int = 320, height: int = 240) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "c.mov")
        with av.open(path, "w", format="mov") as container:
            stream = container.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for index in range(seconds * 10):
                picture = Image.new("RGB", (width, height), (index * 3 % 255, 90, 30))
                frame = av.VideoFrame.from_image(picture)  # type: ignore[no-untyped-call]
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        with open(path, "rb") as handle:
            return handle.read()


@pytest.fixture(scope="module")
def mp4_3s() -> bytes:
    return render_video(make_image(640, 360), None, resolution="720P", seconds=3, fps=8)


# --- audio ----------------------------------------------------------------------------------------------


def test_wav_length_format_and_size() -> None:
    data = make_wav(4.5)
    info = probe_audio(data, AUDIO)
    assert (info.kind, info.format, info.size, info.content_type) == ("audio", "wav", len(data), "audio/wav")
    assert info.seconds == pytest.approx(4.5, abs=0.01)


def test_mp3_length_from_a_real_encoding() -> None:
    data = make_mp3(6.0)
    assert sniff_audio(data) == "mp3"
    info = probe_audio(data, AUDIO)
    assert info.format == "mp3"
    assert info.seconds == pytest.approx(6.0, abs=0.15)  # encoder padding adds a frame or two


def test_audio_longer_than_the_limit_is_refused_naming_the_limit() -> None:
    with pytest.raises(InvalidMedia) as caught:
        probe_audio(make_wav(31, rate=8_000), AUDIO)
    assert caught.value.key == "media.too_long"
    assert caught.value.params["max"] == "30"
    assert caught.value.params["seconds"] == pytest.approx(31.0)


def test_audio_shorter_than_the_minimum_is_refused() -> None:
    with pytest.raises(InvalidMedia) as caught:
        probe_audio(make_wav(1.0), AUDIO)
    assert (caught.value.key, caught.value.params["min"]) == ("media.too_short", "2")


def test_audio_over_the_byte_limit_is_refused_before_parsing() -> None:
    small_limit = replace(AUDIO, max_bytes=50_000)
    data = make_wav(3.0)  # 96 kB of 16 kHz mono
    with pytest.raises(InvalidMedia) as caught:
        probe_audio(data, small_limit)
    assert caught.value.key == "media.too_large"
    assert caught.value.params["size_mb"] > caught.value.params["limit_mb"]


def test_wav_header_promising_more_than_the_file_holds_counts_the_real_bytes() -> None:
    data = bytearray(make_wav(2.5))
    # The data chunk's size says 10 minutes; the file holds 2.5 s.
    data_at = data.index(b"data")
    struct.pack_into("<I", data, data_at + 4, 16_000 * 2 * 600)
    info = probe_audio(bytes(data), AUDIO)
    assert info.seconds == pytest.approx(2.5, abs=0.01)


def test_a_format_the_model_does_not_take_is_refused_with_the_allowed_list() -> None:
    with pytest.raises(InvalidMedia) as caught:
        probe_audio(make_wav(3), replace(AUDIO, formats=("mp3",)))
    assert (caught.value.key, caught.value.params["allowed"]) == ("media.audio_format", "MP3")


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"RIFF",
        b"RIFF\x00\x00\x00\x00WAVE",
        b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00" + b"\x00" * 16,
        b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 64,
        b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f",
        b"\xff\xfb\x90\x00" + b"\x00" * 10,
        b"OggS" + b"\x00" * 100,
        os.urandom(4096),
        b"<html>not audio</html>",
    ],
)
def test_junk_audio_is_refused_never_a_crash(junk: bytes) -> None:
    with pytest.raises(InvalidMedia) as caught:
        probe_audio(junk, AUDIO)
    assert caught.value.key in {"media.empty", "media.audio_format", "media.corrupt", "media.too_short"}


def test_truncated_mp3_is_refused_or_measured_never_a_crash() -> None:
    data = make_mp3(4.0)
    for cut in (10, 200, len(data) // 3):
        try:
            info = probe_audio(data[:cut], AUDIO)
        except InvalidMedia as refused:
            assert refused.key in {"media.corrupt", "media.too_short", "media.audio_format"}
        else:
            assert 0 < info.seconds < 4.2


# --- clips ----------------------------------------------------------------------------------------------


def test_mp4_clip_length_sides_and_sound(mp4_3s: bytes) -> None:
    info = probe_clip(mp4_3s, CLIP)
    assert (info.kind, info.format, info.content_type) == ("clip", "mp4", "video/mp4")
    assert info.seconds == pytest.approx(3.0, abs=0.1)
    assert info.has_audio
    assert info.width is not None and info.height is not None
    assert info.width > info.height >= 240


def test_mov_clip_is_recognised_as_mov() -> None:
    data = make_mov(3)
    assert sniff_clip(data) == "mov"
    info = probe_clip(data, CLIP)
    assert (info.format, info.width, info.height, info.has_audio) == ("mov", 320, 240, False)
    assert info.seconds == pytest.approx(3.0, abs=0.1)


def test_clip_longer_than_the_limit_is_refused(mp4_3s: bytes) -> None:
    with pytest.raises(InvalidMedia) as caught:
        probe_clip(mp4_3s, replace(CLIP, max_seconds=2))
    assert (caught.value.key, caught.value.params["max"]) == ("media.too_long", "2")


def test_clip_sides_are_checked() -> None:
    with pytest.raises(InvalidMedia) as caught:
        probe_clip(make_mov(2, width=320, height=240), replace(CLIP, min_side=256))
    assert caught.value.key == "media.clip_small"


def test_truncated_and_nested_clips_are_refused(mp4_3s: bytes) -> None:
    for data in (mp4_3s[:40], mp4_3s[:2000], mp4_3s[: len(mp4_3s) // 2]):
        try:
            probe_clip(data, CLIP)
        except InvalidMedia as refused:
            assert refused.key in {"media.corrupt", "media.clip_no_video", "media.clip_format"}
    # 20 000 nested moov boxes: a recursive walker would blow the stack.
    depth = 20_000
    nested = b"".join(struct.pack(">I4s", 8 * (depth - i), b"moov") for i in range(depth))
    ftyp = struct.pack(">I4s4sI", 16, b"ftyp", b"isom", 0)
    with pytest.raises(InvalidMedia) as caught:
        probe_clip(ftyp + nested, CLIP)
    assert caught.value.key == "media.corrupt"


def test_audio_file_offered_as_a_clip_is_refused_by_format() -> None:
    with pytest.raises(InvalidMedia) as caught:
        probe_clip(make_wav(3), CLIP)
    assert (caught.value.key, caught.value.params["allowed"]) == ("media.clip_format", "MP4, MOV")
