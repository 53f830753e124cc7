"""Look at a source before decoding anything for the model: what it is, its frames and their times.

`probe(path)` runs inside the decode worker (it reads the file, so it must be guarded too) and
returns a `VideoInfo`: the presentation timestamp of every frame, the keyframes, the stored size,
rotation and pixel aspect. For a container it demuxes every packet (no decoding except the first
frame, which gives the rotation and proves the stream decodes), so the frame table is what the file
really holds, not what its header claims. Problems with the input raise `VideoError` with one line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from stanchat.errors import VideoError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # frames in a folder

# A container whose readable frames end more than this fraction (and more than MIN_MISSING_FRAMES
# frames) before the end its header declares is reported as truncated. decord, given the header's
# frame count, can spin forever looking for the missing frames (dmlc/decord#373).
TRUNCATION_TOLERANCE = 0.05
MIN_MISSING_FRAMES = 3

# Pixel aspect ratios this close to 1 are square (e.g. 640/639 from a rounding encoder).
SQUARE_PIXEL_TOLERANCE = 0.01

# First bytes -> what the file is, for files that are certainly not videos.
_NOT_VIDEO_MAGIC = {b"%PDF-": "a PDF document", b"PK\x03\x04": "a ZIP archive"}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_IMAGE_MAGIC = (b"\xff\xd8\xff", _PNG_MAGIC, b"BM", b"II*\x00", b"MM\x00*")  # JPEG, PNG, BMP, TIFF


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


def probe(path: str, folder_fps: float, tick: Callable[[], None] = lambda: None) -> VideoInfo:
    """Inspect a video file, a still image or a folder of frames (timestamps i / folder_fps).

    `tick` is called while a long container is demuxed, so the watchdog sees progress."""
    if os.path.isdir(path):
        return _probe_folder(path, folder_fps)
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        raise VideoError(f"{path} is empty (0 bytes); re-download or re-export it")
    what = _not_a_video(head)
    if what:
        raise VideoError(f"{path} is {what}, not a video")
    animated_png = head.startswith(_PNG_MAGIC) and b"acTL" in head.split(b"IDAT")[0]  # APNG: a video
    if (head.startswith(_IMAGE_MAGIC) and not animated_png) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return _probe_image(path)
    from stanchat.video.container import probe_container  # PyAV only when a container is read

    return probe_container(path, tick)


def _not_a_video(head: bytes) -> str | None:
    """Name what the first bytes show when they are certainly not a video (PDF, ZIP, text)."""
    for magic, what in _NOT_VIDEO_MAGIC.items():
        if head.startswith(magic):
            return what
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:  # allow a multibyte character cut at the end of the head
        if err.start < len(head) - 4:
            return None
        text = head[: err.start].decode("utf-8")
    if text and all(c.isprintable() or c in "\t\n\r\f" for c in text):
        start = text.lstrip().lower()
        if start.startswith(("<!doctype html", "<html")):
            return "an HTML page (a failed download?)"
        return "a text file"
    return None


def _probe_image(path: str) -> VideoInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = _upright_size(img)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise VideoError(f"{path} is not a readable image ({err})") from None
    return VideoInfo(path, "image", [0.0], fps=0.0, duration=0.0, coded_width=width, coded_height=height)


def _probe_folder(path: str, folder_fps: float) -> VideoInfo:
    from PIL import Image, UnidentifiedImageError

    names = sorted((n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES)), key=_natural_key)
    if not names:
        raise VideoError(f"folder {path} has no frames (expected {', '.join(IMAGE_SUFFIXES)} files)")
    files = [os.path.join(path, n) for n in names]
    try:
        with Image.open(files[0]) as img:
            width, height = _upright_size(img)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise VideoError(f"frame {files[0]} is not a readable image ({err})") from None
    stamps = [i / folder_fps for i in range(len(files))]
    return VideoInfo(
        path, "folder", stamps, fps=folder_fps, duration=len(files) / folder_fps,
        coded_width=width, coded_height=height, files=files,
    )


def _upright_size(img) -> tuple[int, int]:
    """(width, height) after the EXIF orientation (tags 5-8 turn the picture by 90 degrees)."""
    width, height = img.size
    orientation = img.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _natural_key(name: str) -> list:
    """Sort frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


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
