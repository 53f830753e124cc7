"""Look at a source before decoding anything for the model: what it is, its frames and their times.

`probe(path)` runs inside the decode worker (it reads the file, so it must be guarded too) and
returns a `VideoInfo`: the presentation timestamp of every frame, the keyframes, the stored size,
rotation and pixel aspect. For a container it demuxes every packet (no decoding except the first
frame, which gives the rotation and proves the stream decodes), so the frame table is what the file
really holds, not what its header claims. Problems with the input raise `VideoError` with one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from stanchat.errors import VideoError
from stanchat.video.info import VideoInfo

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # frames in a folder

# First bytes -> what the file is, for files that are certainly not videos.
_NOT_VIDEO_MAGIC = {b"%PDF-": "a PDF document", b"PK\x03\x04": "a ZIP archive"}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_IMAGE_MAGIC = (b"\xff\xd8\xff", _PNG_MAGIC, b"BM", b"II*\x00", b"MM\x00*")  # JPEG, PNG, BMP, TIFF


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
    from stanchat.video.container import probe_container  # lazy for speed, not a circle: PyAV loads only for containers

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
