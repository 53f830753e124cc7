"""Clips for the video tests: real ones (tests/data/videos, ../shared/videos) and generated ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from videogen import make_clip

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "videos"
SHARED = REPO.parent / "shared" / "videos"  # clips we may read but not copy (AGPL, no licence, large)


def real_clip(name: str) -> Path:
    """A real clip from tests/data/videos, else ../shared/videos; skips the test when neither has it."""
    for folder in (DATA, SHARED):
        if (folder / name).is_file():
            return folder / name
    pytest.skip(f"{name} is not in {DATA} or {SHARED}")


# name -> (codec, encoder options, decord can read it). Keyframes every 12 frames so seeking is real.
GENERATED = {
    "h264.mp4": ("libx264", {"g": "12"}, True),
    "h264.mkv": ("libx264", {"g": "12"}, True),
    "h264.flv": ("libx264", {"g": "12"}, True),
    "h264.ts": ("libx264", {"g": "12"}, False),  # MPEG-TS: no seek index, decord numbers frames wrongly
    # B-frames across the GOP boundary: decord numbers keyframes in decode order, so it is refused
    "mpeg4-bframes.avi": ("mpeg4", {"g": "12", "bf": "2"}, False),
    "mpeg4-bframes.mp4": ("mpeg4", {"g": "12", "bf": "2"}, False),
    "mjpeg.avi": ("mjpeg", {}, True),
    "vp8.webm": ("libvpx", {"g": "12"}, True),
    "vp9.webm": ("libvpx-vp9", {"g": "12"}, True),
    "hevc.mp4": ("libx265", {"x265-params": "keyint=12:log-level=error"}, False),  # open GOP: as above
    "ffv1.mkv": ("ffv1", {}, True),
    "av1.mp4": ("libsvtav1", {"g": "12"}, False),  # decord's FFmpeg has no AV1
    "anim.gif": ("gif", {}, False),  # decord cannot open GIFs
    "anim.apng": ("apng", {}, False),  # an animated PNG is a video, not a still image
}
GENERATED_FRAMES = 40


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> dict[str, Path]:
    """Every clip of GENERATED: 40 frames of 64x48 at 25 fps, each frame coding its own index."""
    folder = tmp_path_factory.mktemp("generated")
    return {
        name: make_clip(folder / name, codec, frames=GENERATED_FRAMES, options=options)
        for name, (codec, options, _) in GENERATED.items()
    }
