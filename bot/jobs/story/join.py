"""Join a story's segment mp4s into one mp4 (PyAV; install the `video` extra).

The seam rule. Segment k runs keyframe k -> keyframe k+1, so its last frame and segment k+1's first frame show
the same keyframe. At every seam the earlier segment's last frame is dropped and the later segment's first
frame (an IDR picture, which a remux needs to start from anyway) is kept:

    joined frames = sum(frames of each segment) - (segments - 1)

and output frame n_0 + ... + n_k - (k + 1) (0-based, n_i = frames of segment i) is segment k+1's first frame,
i.e. keyframe k+1; see `expected_frames` and `seam_indices`.

Per stream kind (video, audio), the segments are remuxed (packets copied, timestamps shifted) when every segment's
stream matches the first one's (same codec, size or sample layout, time base, codec extradata) and each dropped
frame is the last packet in decode order (nothing refers to it); otherwise that kind is re-encoded (H.264 / AAC)
at the first segment's size and rate. Audio follows the video: each segment contributes audio for as long as
its kept video lasts, so sound stays in sync across seams (a remux cuts at packet boundaries: a gap of under
one audio frame per seam, never an overlap).

Memory stays bounded: packets and frames are streamed one at a time, never a whole file. The output is written
to a temporary file next to the destination and renamed into place, so a reader (or a restarted bot) never sees
half a video. CPU-bound: callers run `join_segments` in a thread.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

log = logging.getLogger(__name__)

_AUDIO_FRAME = 1024  # samples per AAC frame


class JoinError(Exception):
    """The segments cannot be joined (unreadable, no video, a segment of fewer than two frames)."""


class _RemuxNotPossible(Exception):
    """Raised mid-remux when timestamps would go backwards; the join falls back to re-encoding."""


@dataclass(frozen=True, slots=True)
class JoinResult:
    """The joined file, its length in frames and seconds, and which streams were copied as they were."""

    path: Path
    frames: int
    seconds: float
    video_remuxed: bool
    audio_remuxed: bool | None  # None: no audio


@dataclass(frozen=True, slots=True)
class _VideoProbe:
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    time_base: Fraction
    extradata: bytes | None
    rate: Fraction
    packets: int
    first_pts: int
    first_is_key: bool
    last_decoded_pts: int  # pts of the last packet in decode order
    max_pts: int


@dataclass(frozen=True, slots=True)
class _AudioProbe:
    codec: str
    rate: int
    layout: str
    time_base: Fraction
    extradata: bytes | None


@dataclass(frozen=True, slots=True)
class _Probe:
    video: _VideoProbe
    audio: _AudioProbe | None


def expected_frames(segment_frames: Sequence[int]) -> int:
    """The joined length in frames: every segment's frames, less one duplicated keyframe per seam."""
    return sum(segment_frames) - (len(segment_frames) - 1)


def seam_indices(segment_frames: Sequence[int]) -> list[int]:
    """Output frame indices of the inner keyframes (segment k+1's first frame, k = 0..n-2)."""
    seams = []
    position = 0
    for count in segment_frames[:-1]:
        position += count - 1
        seams.append(position)
    return seams


def _probe(path: Path) -> _Probe:
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise JoinError(f"{path.name} has no video stream")
            video = container.streams.video[0]
            ctx = video.codec_context
            audio_probe = None
            if container.streams.audio:
                audio = container.streams.audio[0]
                actx = audio.codec_context
                audio_probe = _AudioProbe(
                    codec=actx.name,
                    rate=int(actx.sample_rate),
                    layout=str(actx.layout.name),
                    time_base=Fraction(audio.time_base) if audio.time_base else Fraction(1, int(actx.sample_rate)),
                    extradata=bytes(actx.extradata) if actx.extradata else None,
                )
            packets = 0
            first_pts: int | None = None
            first_is_key = False
            last_pts = 0
            max_pts: int | None = None
            for packet in container.demux(video):
                if packet.size == 0 or packet.pts is None:
                    continue  # the demuxer's flush packet, or a packet the muxer could not time
                if first_pts is None:
                    first_pts = packet.pts
                    first_is_key = bool(packet.is_keyframe)
                packets += 1
                last_pts = packet.pts
                max_pts = packet.pts if max_pts is None else max(max_pts, packet.pts)
            if first_pts is None or max_pts is None or packets < 2:
                raise JoinError(f"{path.name} has fewer than two video frames")
            rate = video.average_rate or video.guessed_rate or Fraction(30)
            return _Probe(
                _VideoProbe(
                    codec=ctx.name,
                    width=int(ctx.width),
                    height=int(ctx.height),
                    pix_fmt=ctx.pix_fmt,
                    time_base=_time_base(video.time_base),
                    extradata=bytes(ctx.extradata) if ctx.extradata else None,
                    rate=Fraction(rate),
                    packets=packets,
                    first_pts=first_pts,
                    first_is_key=first_is_key,
                    last_decoded_pts=last_pts,
                    max_pts=max_pts,
                ),
                audio_probe,
            )
    except (av.FFmpegError, OSError) as exc:
        raise JoinError(f"{path.name} cannot be read: {type(exc).__name__}") from None


def _time_base(value: Fraction | None) -> Fraction:
    if value is None or value <= 0:
        raise JoinError("a stream without a time base")
    return Fraction(value)


def _video_remuxable(probes: Sequence[_Probe]) -> bool:
    first = probes[0].video
    for probe in probes:
        v = probe.video
        same = (v.codec, v.width, v.height, v.pix_fmt, v.time_base, v.extradata) == (
            first.codec,
            first.width,
            first.height,
            first.pix_fmt,
            first.time_base,
            first.extradata,
        )
        # A segment must start on a keyframe (it is kept) and end on its last-displayed picture in decode
        # order (it is dropped: nothing decoded later can refer to it).
        if not (same and v.first_is_key and v.last_decoded_pts == v.max_pts):
            return False
    return True


def _audio_remuxable(probes: Sequence[_Probe]) -> bool:
    audios = [p.audio for p in probes]
    if any(a is None for a in audios):
        return False
    first = audios[0]
    assert first is not None
    return all(
        a is not None
        and (a.codec, a.rate, a.layout, a.time_base, a.extradata)
        == (first.codec, first.rate, first.layout, first.time_base, first.extradata)
        for a in audios
    )


def join_segments(segments: Sequence[Path], destination: Path) -> JoinResult:
    """Join `segments` (in story order) into `destination` atomically. Raises JoinError."""
    if len(segments) < 2:
        raise JoinError("a join needs at least two segments")
    probes = [_probe(path) for path in segments]
    has_audio = any(p.audio is not None for p in probes)
    remux_video = _video_remuxable(probes)
    remux_audio = has_audio and _audio_remuxable(probes)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        try:
            frames = _write(segments, probes, temp, remux_video=remux_video, remux_audio=remux_audio)
        except _RemuxNotPossible as exc:
            log.info("story join: remux not possible (%s); re-encoding", exc)
            remux_video = remux_audio = False
            frames = _write(segments, probes, temp, remux_video=False, remux_audio=False)
        seconds = _duration(temp)
        os.replace(temp, destination)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    log.info(
        "story joined: %d segments, %d frames, video %s, audio %s",
        len(segments),
        frames,
        "remuxed" if remux_video else "re-encoded",
        "none" if not has_audio else "remuxed" if remux_audio else "re-encoded",
    )
    return JoinResult(destination, frames, seconds, remux_video, remux_audio if has_audio else None)


def _duration(path: Path) -> float:
    with av.open(str(path), mode="r") as container:
        return float(container.duration or 0) / 1_000_000


def _kept_seconds(probes: Sequence[_Probe], remux_video: bool) -> list[float]:
    """How long each segment's kept video lasts in the output (its last frame dropped, except the last segment)."""
    kept = []
    last = len(probes) - 1
    for index, probe in enumerate(probes):
        v = probe.video
        if remux_video:
            ticks = v.max_pts - v.first_pts if index < last else v.max_pts - v.first_pts + _frame_ticks(v)
            kept.append(float(ticks * v.time_base))
        else:
            frames = v.packets - 1 if index < last else v.packets
            kept.append(float(frames / probes[0].video.rate))
    return kept


def _frame_ticks(video: _VideoProbe) -> int:
    return max(1, round(1 / (video.rate * video.time_base)))


def _write(
    segments: Sequence[Path], probes: Sequence[_Probe], temp: Path, *, remux_video: bool, remux_audio: bool
) -> int:
    reference = probes[0]
    has_audio = any(p.audio is not None for p in probes)
    kept = _kept_seconds(probes, remux_video)
    try:
        with av.open(str(temp), mode="w", format="mp4", options={"movflags": "+faststart"}) as output:
            out_video, out_audio = _add_streams(output, segments[0], reference, remux_video, remux_audio, has_audio)
            if remux_video:
                frames = _remux_video(output, out_video, segments, probes)
            else:
                frames = _reencode_video(output, out_video, segments, reference.video)
            if out_audio is not None:
                if remux_audio:
                    _remux_audio(output, out_audio, segments, kept)
                else:
                    _reencode_audio(output, out_audio, segments, kept)
            return frames
    except (av.FFmpegError, OSError) as exc:
        raise JoinError(f"the join failed: {type(exc).__name__}: {exc}") from None


def _add_streams(
    output: Any, first_segment: Path, reference: _Probe, remux_video: bool, remux_audio: bool, has_audio: bool
) -> tuple[Any, Any]:
    # Every stream must exist before the first packet: the muxer writes its header then.
    with av.open(str(first_segment), mode="r") as source:
        if remux_video:
            out_video = output.add_stream_from_template(source.streams.video[0])
        else:
            out_video = output.add_stream("libx264", rate=reference.video.rate)
            out_video.width = reference.video.width
            out_video.height = reference.video.height
            out_video.pix_fmt = "yuv420p"
            out_video.options = {"preset": "veryfast", "crf": "18"}
        out_audio = None
        if has_audio:
            if remux_audio:
                out_audio = output.add_stream_from_template(source.streams.audio[0])
            else:
                rate = reference.audio.rate if reference.audio is not None else 48_000
                layout = reference.audio.layout if reference.audio is not None else "stereo"
                out_audio = output.add_stream("aac", rate=rate, layout=layout)
    return out_video, out_audio


def _remux_video(output: Any, out_stream: Any, segments: Sequence[Path], probes: Sequence[_Probe]) -> int:
    offset = 0  # in the (shared) input time base
    last_dts: int | None = None
    written = 0
    last = len(segments) - 1
    for index, (path, probe) in enumerate(zip(segments, probes, strict=True)):
        v = probe.video
        seen = 0
        with av.open(str(path), mode="r") as source:
            stream = source.streams.video[0]
            for packet in source.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                seen += 1
                if index < last and seen == v.packets:
                    break  # the seam duplicate: this segment's last frame, the next one's first
                shift = offset - v.first_pts
                source_dts = packet.dts if packet.dts is not None else packet.pts
                packet.pts += shift
                packet.dts = source_dts + shift
                if last_dts is not None and packet.dts <= last_dts:
                    raise _RemuxNotPossible(f"decode times go backwards at segment {index + 1}")
                last_dts = packet.dts
                packet.stream = out_stream
                packet.time_base = _time_base(stream.time_base)
                output.mux(packet)
                written += 1
        offset += v.max_pts - v.first_pts
    return written


def _decoded_frames(path: Path) -> Iterator[Any]:
    with av.open(str(path), mode="r") as source:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        yield from source.decode(stream)


def _reencode_video(output: Any, out_stream: Any, segments: Sequence[Path], reference: _VideoProbe) -> int:
    written = 0
    last = len(segments) - 1
    for index, path in enumerate(segments):
        held: Any = None  # one frame of look-ahead: a non-final segment's last frame is not encoded
        for frame in _decoded_frames(path):
            if held is not None:
                written = _encode_frame(output, out_stream, held, reference, written)
            held = frame
        if held is not None and index == last:
            written = _encode_frame(output, out_stream, held, reference, written)
    output.mux(out_stream.encode(None))
    return written


def _encode_frame(output: Any, out_stream: Any, frame: Any, reference: _VideoProbe, index: int) -> int:
    converted = frame.reformat(width=reference.width, height=reference.height, format="yuv420p")
    converted.pts = index
    converted.time_base = Fraction(1) / reference.rate
    output.mux(out_stream.encode(converted))
    return index + 1


def _remux_audio(output: Any, out_stream: Any, segments: Sequence[Path], kept: Sequence[float]) -> None:
    offset_seconds = 0.0
    last_dts: int | None = None
    for path, seconds in zip(segments, kept, strict=True):
        with av.open(str(path), mode="r") as source:
            stream = source.streams.audio[0]
            time_base = _time_base(stream.time_base)
            first_pts: int | None = None
            offset = round(offset_seconds / time_base)
            limit = round(seconds / time_base)
            for packet in source.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                if first_pts is None:
                    first_pts = packet.pts
                start = packet.pts - first_pts
                if start + (packet.duration or 0) > limit:
                    break  # would overlap the next segment's sound
                packet.pts = start + offset
                packet.dts = packet.pts
                if last_dts is not None and packet.dts <= last_dts:
                    continue
                last_dts = packet.dts
                packet.stream = out_stream
                packet.time_base = time_base
                output.mux(packet)
        offset_seconds += seconds


def _silence(layout: str, rate: int, samples: int) -> Any:
    frame = av.AudioFrame(format="fltp", layout=layout, samples=samples)
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate = rate
    return frame


def _reencode_audio(output: Any, out_stream: Any, segments: Sequence[Path], kept: Sequence[float]) -> None:
    rate = int(out_stream.codec_context.sample_rate)
    layout = str(out_stream.codec_context.layout.name)
    fifo = av.AudioFifo()
    encoded = 0

    def drain(final: bool) -> None:
        nonlocal encoded
        while fifo.samples >= _AUDIO_FRAME or (final and fifo.samples > 0):
            chunk = fifo.read(min(_AUDIO_FRAME, fifo.samples))
            if chunk is None:
                break
            chunk.pts = encoded
            encoded += chunk.samples
            output.mux(out_stream.encode(chunk))

    def put(frame: Any) -> None:
        frame.pts = None  # the fifo checks continuity of timestamps; ours are assigned on the way out
        fifo.write(frame)
        drain(final=False)

    for path, seconds in zip(segments, kept, strict=True):
        wanted = round(seconds * rate)
        taken = 0
        with av.open(str(path), mode="r") as source:
            if source.streams.audio:
                resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
                segment_fifo = av.AudioFifo()
                for decoded in source.decode(source.streams.audio[0]):
                    for converted in resampler.resample(decoded):
                        converted.pts = None
                        segment_fifo.write(converted)
                        while segment_fifo.samples and taken < wanted:
                            part = segment_fifo.read(min(segment_fifo.samples, wanted - taken))
                            if part is None:
                                break
                            taken += part.samples
                            put(part)
                    if taken >= wanted:
                        break
        if taken < wanted:  # a segment without sound, or with less of it than picture
            put(_silence(layout, rate, wanted - taken))
    drain(final=True)
    output.mux(out_stream.encode(None))
