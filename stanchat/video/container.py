"""Probe a video container with PyAV: demux every packet to build the frame table.

Packets are only demuxed, not decoded (except until the first frame appears), so probing a
two-hour file costs a read of the file, not a decode of it. The table is sorted by presentation
time, skips packets the container marks as discarded (edit lists), and records the keyframes a
decoder can start from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import av

from stanchat.errors import VideoError
from stanchat.video.info import SQUARE_PIXEL_TOLERANCE, VideoInfo, check_truncation, measured_fps
from stanchat.video.shown import HIDDEN_FRAME_CODECS, shows_frame

logger = logging.getLogger(__name__)

TICK_EVERY = 256  # packets demuxed between progress reports (a two-hour file has ~10^5 packets per stream)


@dataclass
class _Scan:
    """What one pass over the packets found."""

    pts: list[int | None]  # per video packet (decode order): pts, else dts, else None
    keys: list[bool]  # per video packet: is a keyframe
    last_duration: int  # duration of the latest video packet, stream time base (0 if unknown)
    readable_end: float  # seconds: the latest packet end over all streams (pts time, not from the start)
    first_frame: av.VideoFrame | None  # the first decoded picture (rotation, size)
    hidden: int  # video packets holding only a hidden (alt-ref) frame: references, not frames
    read_error: str | None  # why demuxing stopped early, if it did


def probe_container(path: str, tick: Callable[[], None]) -> VideoInfo:
    """Frame table and geometry of the first video stream in `path` (VideoError if there is none)."""
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, EOFError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise VideoError(f"cannot read {path} as a video: {reason} (truncated, corrupt or not a video?)") from None
    with container:
        stream = _video_stream(container, path)
        scan = _scan_packets(container, stream, tick)
        return _frame_table(path, container, stream, scan)


def _video_stream(container: av.container.InputContainer, path: str) -> av.VideoStream:
    streams = [s for s in container.streams.video if av.stream.Disposition.attached_pic not in s.disposition]
    if streams:
        return streams[0]
    if container.streams.audio:
        raise VideoError(f"{path} has no video stream (audio only)")
    raise VideoError(f"{path} has no video stream")


def _scan_packets(container: av.container.InputContainer, stream: av.VideoStream, tick) -> _Scan:
    """Demux everything once; decode only until the first video frame comes out."""
    scan = _Scan(pts=[], keys=[], last_duration=0, readable_end=0.0, first_frame=None, hidden=0, read_error=None)
    codec = stream.codec_context.name if stream.codec_context.name in HIDDEN_FRAME_CODECS else ""
    try:
        for n, packet in enumerate(container.demux()):
            if n % TICK_EVERY == 0:
                tick()
            if packet.size == 0:
                continue  # the flush packet at the end of each stream
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is not None:
                end = float((stamp + (packet.duration or 0)) * packet.time_base)
                scan.readable_end = max(scan.readable_end, end)
            if packet.stream.index != stream.index or packet.is_discard:
                continue
            if codec and not shows_frame(codec, bytes(packet)):
                scan.hidden += 1
                if scan.first_frame is None:
                    scan.first_frame = _decode_first(packet)  # feeds the decoder its reference
                continue
            scan.pts.append(stamp)
            scan.keys.append(packet.is_keyframe)
            scan.last_duration = packet.duration or 0
            if scan.first_frame is None:
                scan.first_frame = _decode_first(packet)
    except (av.FFmpegError, EOFError) as err:
        scan.read_error = getattr(err, "strerror", None) or str(err)
    if scan.first_frame is None and scan.pts:
        scan.first_frame = _flush_first(stream)
    return scan


def _decode_first(packet: av.Packet) -> av.VideoFrame | None:
    try:
        frames = packet.decode()
    except av.FFmpegError:
        return None  # a broken leading packet; later ones may decode
    return frames[0] if frames else None


def _flush_first(stream: av.VideoStream) -> av.VideoFrame | None:
    """Drain the decoder (codecs with delay return their first frame only when flushed)."""
    try:
        frames = stream.decode(None)
    except av.FFmpegError:
        return None
    return frames[0] if frames else None


def _frame_table(path: str, container, stream: av.VideoStream, scan: _Scan) -> VideoInfo:
    if not scan.pts:
        raise VideoError(f"{path} has a video stream but no frames (zero duration)")
    if scan.first_frame is None:
        reason = scan.read_error or "no picture came out"
        raise VideoError(f"no frame of {path} could be decoded (corrupt video stream: {reason})")
    if scan.read_error:
        logger.debug("%s: demuxing stopped early: %s", path, scan.read_error)
    if scan.hidden:
        logger.debug("%s: %d hidden (alt-ref) frames are not counted as frames", path, scan.hidden)
    # Matroska declares the end time, MP4 the length after start_time: compare with the absolute end,
    # which can only make a complete file look longer, never shorter.
    declared_end = container.duration / av.time_base if container.duration and container.duration > 0 else 0.0
    rate = float(stream.guessed_rate or stream.average_rate or 0)
    check_truncation(path, len(scan.pts), rate, stream.frames, scan.readable_end, declared_end)
    pts, keyframes, stamps = _presentation_order(path, scan, stream.time_base, rate)
    fps = measured_fps(stamps, rate)
    # The last frame lasts one mean frame interval: packet durations can be bogus (1 ms in a file whose
    # container claims 1000 fps); a single frame falls back to its packet's duration.
    last = 1.0 / fps if fps > 0 else float(scan.last_duration * stream.time_base)
    frame = scan.first_frame
    aspect = float(stream.sample_aspect_ratio or 1)
    return VideoInfo(
        path, "video", stamps, fps=fps, duration=stamps[-1] + last,
        coded_width=frame.width, coded_height=frame.height,
        rotation=round(frame.rotation / 90) * 90 % 360,
        pixel_aspect=1.0 if abs(aspect - 1) < SQUARE_PIXEL_TOLERANCE or aspect <= 0 else aspect,
        stream_index=stream.index, pts=pts, keyframes=keyframes, seekable=bool(pts),
        indexed=not container.format.flags & av.format.Flags.ts_discont.value,
    )


def _presentation_order(path: str, scan: _Scan, time_base, rate: float) -> tuple[list[int], list[int], list[float]]:
    """(pts, keyframe indices, seconds from the first frame), sorted by presentation time.

    Frames shown before the first one the decoder outputs cannot be decoded (a stream cut in the
    middle of a GOP starts with frames whose references are gone): the table starts at that frame.
    Without distinct pts (some AVI), frames are numbered and spaced at the container's rate; pts is []."""
    if None in scan.pts or len(set(scan.pts)) != len(scan.pts):
        return [], [0], [i / rate if rate > 0 else 0.0 for i in range(len(scan.pts))]
    order = sorted(range(len(scan.pts)), key=lambda i: scan.pts[i])  # decode order -> presentation order
    pts = [scan.pts[i] for i in order]
    keys = [scan.keys[i] for i in order]
    first = pts.index(scan.first_frame.pts) if scan.first_frame.pts in pts else 0
    if first:
        logger.debug("%s: the first %d frames do not decode (the stream starts mid-GOP); skipping them", path, first)
        pts, keys = pts[first:], keys[first:]
    keyframes = [i for i, key in enumerate(keys) if key]
    return pts, keyframes, [float((p - pts[0]) * time_base) for p in pts]
