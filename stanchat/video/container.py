"""Probe a video container with PyAV: demux every packet to build the frame table.

Packets are only demuxed, not decoded (except until the first frame appears), so probing a
two-hour file costs a read of the file, not a decode of it. The table is sorted by presentation
time, skips packets the container marks as discarded (edit lists), and records the keyframes a
decoder can start from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import av

from stanchat.errors import VideoError
from stanchat.video.probe import SQUARE_PIXEL_TOLERANCE, VideoInfo, check_truncation, measured_fps

logger = logging.getLogger(__name__)


@dataclass
class _Scan:
    """What one pass over the packets found."""

    pts: list[int | None]  # per video packet (decode order): pts, else dts, else None
    keys: list[bool]  # per video packet: is a keyframe
    last_duration: int  # duration of the latest video packet, stream time base (0 if unknown)
    readable_end: float  # seconds: the latest packet end over all streams, from the container start
    first_frame: av.VideoFrame | None  # the first decoded picture (rotation, size)
    read_error: str | None  # why demuxing stopped early, if it did


def probe_container(path: str) -> VideoInfo:
    """Frame table and geometry of the first video stream in `path` (VideoError if there is none)."""
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, EOFError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise VideoError(f"cannot read {path} as a video: {reason} (truncated, corrupt or not a video?)") from None
    with container:
        stream = _video_stream(container, path)
        scan = _scan_packets(container, stream)
        return _frame_table(path, container, stream, scan)


def _video_stream(container: av.container.InputContainer, path: str) -> av.VideoStream:
    streams = [s for s in container.streams.video if av.stream.Disposition.attached_pic not in s.disposition]
    if streams:
        return streams[0]
    if container.streams.audio:
        raise VideoError(f"{path} has no video stream (audio only)")
    raise VideoError(f"{path} has no video stream")


def _scan_packets(container: av.container.InputContainer, stream: av.VideoStream) -> _Scan:
    """Demux everything once; decode only until the first video frame comes out."""
    scan = _Scan(pts=[], keys=[], last_duration=0, readable_end=0.0, first_frame=None, read_error=None)
    origin = (container.start_time or 0) / av.time_base
    try:
        for packet in container.demux():
            if packet.size == 0:
                continue  # the flush packet at the end of each stream
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is not None:
                end = float((stamp + (packet.duration or 0)) * packet.time_base) - origin
                scan.readable_end = max(scan.readable_end, end)
            if packet.stream.index != stream.index or packet.is_discard:
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
        raise VideoError(f"no frame of {path} could be decoded (corrupt video stream: {scan.read_error or 'no picture'})")
    if scan.read_error:
        logger.debug("%s: demuxing stopped early: %s", path, scan.read_error)
    time_base = stream.time_base
    rate = float(stream.guessed_rate or stream.average_rate or 0)
    seekable = None not in scan.pts and len(set(scan.pts)) == len(scan.pts)
    if seekable:
        order = sorted(range(len(scan.pts)), key=lambda i: scan.pts[i])  # decode order -> presentation order
        pts = [scan.pts[i] for i in order]
        keyframes = [rank for rank, i in enumerate(order) if scan.keys[i]]
        stamps = [float((p - pts[0]) * time_base) for p in pts]
    else:  # no usable timestamps: number the frames and space them at the container's rate
        pts, keyframes = [], [0]
        stamps = [i / rate if rate > 0 else 0.0 for i in range(len(scan.pts))]
    fps = measured_fps(stamps, rate)
    # The last frame lasts one mean frame interval: packet durations can be bogus (1 ms in a file whose
    # container claims 1000 fps); a single frame falls back to its packet's duration.
    last = 1.0 / fps if fps > 0 else float(scan.last_duration * time_base)
    declared_end = container.duration / av.time_base if container.duration and container.duration > 0 else 0.0
    check_truncation(path, len(stamps), fps, stream.frames, scan.readable_end, declared_end)
    frame = scan.first_frame
    aspect = float(stream.sample_aspect_ratio or 1)
    return VideoInfo(
        path, "video", stamps, fps=fps, duration=stamps[-1] + last,
        coded_width=frame.width, coded_height=frame.height,
        rotation=round(frame.rotation / 90) * 90 % 360,
        pixel_aspect=1.0 if abs(aspect - 1) < SQUARE_PIXEL_TOLERANCE or aspect <= 0 else aspect,
        stream_index=stream.index, pts=pts, keyframes=keyframes, seekable=seekable,
        indexed=not container.format.flags & av.format.Flags.ts_discont.value,
    )
