"""What a video source holds (`VideoInfo`) and the checks every prober applies to it.

A leaf: it imports nothing of stanchat.video, so the probers (`probe` for files, folders and stills,
`container` for what PyAV demuxes) and the decoders (`backends`) all build on it without a circle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from stanchat.errors import VideoError

# A container whose readable frames end more than this fraction (and more than MIN_MISSING_FRAMES
# frames) before the end its header declares is reported as truncated. decord, given the header's
# frame count, can spin forever looking for the missing frames (dmlc/decord#373).
TRUNCATION_TOLERANCE = 0.05
MIN_MISSING_FRAMES = 3

# Pixel aspect ratios this close to 1 are square (e.g. 640/639 from a rounding encoder).
SQUARE_PIXEL_TOLERANCE = 0.01

@dataclass
class VideoInfo:
    """What a source holds: every frame's time, its keyframes and how to show its pictures."""

    path: str  # the file or folder
    kind: str  # "video" (a container ffmpeg reads), "image" (one still picture) or "folder" (of frames)
    timestamps: list[float]  # each frame's presentation time, seconds from the first frame, non-decreasing
    fps: float  # frames per second measured from the timestamps; 0.0 for a still image
    duration: float  # seconds from the first frame's start to the last frame's end; 0.0 for a still image
    coded_width: int  # stored picture width in pixels, before rotation and pixel aspect
    coded_height: int  # stored picture height in pixels
    rotation: int = 0  # degrees counterclockwise that turn the stored picture upright: 0, 90, 180 or 270
    pixel_aspect: float = 1.0  # width of one stored pixel over its height (1.0: square pixels)
    stream_index: int = -1  # the decoded video stream (kind "video")
    pts: list[int] = field(default_factory=list)  # each frame's pts in stream time base, presentation order
    keyframes: list[int] = field(default_factory=list)  # presentation indices of keyframes, ascending
    seekable: bool = False  # every frame has its own pts: a decoder may seek and match frames by pts
    indexed: bool = False  # the container keeps a seek index (not MPEG-TS/PS), which decord's numbering needs
    files: list[str] = field(default_factory=list)  # the frame files in order (kind "folder")

    @property
    def count(self) -> int:
        """Number of frames in the source."""
        return len(self.timestamps)

    @property
    def width(self) -> int:
        """Width as displayed: after pixel aspect and rotation."""
        return self.display_size[0]

    @property
    def height(self) -> int:
        """Height as displayed: after pixel aspect and rotation."""
        return self.display_size[1]

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as a player shows the picture."""
        w, h = max(1, round(self.coded_width * self.pixel_aspect)), self.coded_height
        return (h, w) if self.rotation in (90, 270) else (w, h)


def check_truncation(
    path: str, count: int, fps: float, declared_frames: int, readable_end: float, declared_end: float
) -> None:
    """Raise VideoError when the readable frames stop well before the end the header declares.

    count and readable_end: frames demuxed and the latest time they reach (seconds); declared_frames
    (0: unknown) and declared_end (seconds, 0: unknown): what the container header claims."""
    missing_frames = declared_frames - count if declared_frames > 0 else 0
    missing_seconds = declared_end - readable_end if declared_end > 0 else 0.0
    frame_time = 1.0 / fps if fps > 0 else 0.0
    short_by_count = missing_frames > max(MIN_MISSING_FRAMES, TRUNCATION_TOLERANCE * declared_frames)
    short_by_time = missing_seconds > max(MIN_MISSING_FRAMES * frame_time, TRUNCATION_TOLERANCE * declared_end)
    if short_by_count or short_by_time:
        claim = f"{declared_frames} frames" if short_by_count else f"{declared_end:.2f} s"
        raise VideoError(
            f"{path} is truncated: its header declares {claim} but only {count} frame{'s' * (count != 1)} "
            f"(up to {readable_end:.2f} s) can be read; re-download or re-encode it"
        )


def measured_fps(timestamps: list[float], fallback: float) -> float:
    """Frames per second from the timestamps (the container's rate can be bogus); `fallback` for one frame."""
    if len(timestamps) >= 2 and timestamps[-1] > timestamps[0]:
        return (len(timestamps) - 1) / (timestamps[-1] - timestamps[0])
    return fallback if fallback and math.isfinite(fallback) else 0.0
