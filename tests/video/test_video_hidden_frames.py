"""VP9 hidden (alt-ref) frames stored as blocks of their own are references, not frames.

Counted as frames they made a 72-frame clip look like 80 frames with duplicate pts, numbered at the
container's rate past the real end, and the last samples repeated the final picture stamped after it.
"""

from __future__ import annotations

import json

import av
import pytest
from conftest import DATA
from videogen import count_packets, make_clip, read_index, split_hidden_frames

from stanchat.cli import main
from stanchat.video import load_video
from stanchat.video.shown import shows_frame
from tests.floats import MILLISECOND

HIDDEN = bytes([0x84, 0, 0])  # VP9 profile 0, inter frame, show_frame = 0
SHOWN = bytes([0x86, 0, 0])  # the same with show_frame = 1
EXISTING = bytes([0x88])  # show_existing_frame = 1


def test_shows_frame_reads_vp9_and_vp8_headers():
    assert not shows_frame("vp9", HIDDEN)
    assert shows_frame("vp9", SHOWN)
    assert shows_frame("vp9", EXISTING)
    superframe = HIDDEN + SHOWN + bytes([0xC1, 3, 3, 0xC1])  # index: 2 frames, 1-byte sizes
    assert shows_frame("vp9", superframe)
    assert not shows_frame("vp9", HIDDEN + HIDDEN + bytes([0xC1, 3, 3, 0xC1]))
    assert not shows_frame("vp8", bytes([0x00, 0, 0]))  # frame tag bit 4 clear: hidden
    assert shows_frame("vp8", bytes([0x10, 0, 0]))
    assert shows_frame("h264", b"")


def _decoded_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize("backend", ["pyav", "auto"])
def test_libvpx_alt_ref_blocks_are_not_frames(tmp_path, backend):
    """The bear clip (libvpx, two alt-ref frames in superframes) with its alt-refs in their own blocks."""
    path = split_hidden_frames(DATA / "bear-vp9-odd-dimensions.webm", tmp_path / "altref.webm")
    shown = _decoded_count(path)
    assert (shown, count_packets(path)) == (30, 32)  # the file really holds two hidden blocks
    clip = load_video(path, 16, backend=backend)
    assert clip.source_frames == shown
    assert clip.duration == pytest.approx(30 / 29.97, **MILLISECOND)
    assert all(0 <= t < clip.duration for t in clip.timestamps)
    assert clip.indices[-1] < shown and len(set(clip.indices)) == 16
    every = load_video(path, 60, "fps", fps=60.0, backend=backend)  # asks for more than there are
    assert every.timestamps[-1] < every.duration and max(every.indices) == shown - 1


# libvpx codes alt-ref frames in one pass only in realtime mode at cpu-used >= 5, with a bitrate
# (VBR) and a lookahead; a keyframe every 12 frames gives each GOP its own alt-ref (8 in 72 frames).
ALT_REF_OPTIONS = {
    "deadline": "realtime", "cpu-used": "5", "b": "200k", "lag-in-frames": "25", "auto-alt-ref": "1", "g": "12"
}


def _encode(path, pix_fmt: str, frames: int):
    formats = [f.name for f in av.codec.Codec("libvpx-vp9", "w").video_formats]
    if pix_fmt not in formats:  # a libvpx built without --enable-vp9-highbitdepth (PyAV's wheels)
        pytest.skip(f"this libvpx-vp9 cannot encode {pix_fmt} (no high bit depth; it takes {', '.join(formats)})")
    return make_clip(path, "libvpx-vp9", frames=frames, fps=24, options=ALT_REF_OPTIONS, pix_fmt=pix_fmt)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le"])
def test_encoded_vp9_with_alt_refs_counts_the_frames_written(tmp_path, pix_fmt):
    written = 72
    source = _encode(tmp_path / f"{pix_fmt}.webm", pix_fmt, written)
    path = split_hidden_frames(source, tmp_path / f"{pix_fmt}-split.webm")
    assert count_packets(path) > written  # libvpx really wrote hidden frames: the test cannot pass trivially
    assert _decoded_count(path) == written
    for backend in ("pyav", "auto"):
        clip = load_video(path, written, backend=backend)  # every frame, once
        assert clip.source_frames == written
        assert clip.duration == pytest.approx(written / 24, **MILLISECOND)
        assert clip.indices == list(range(written))
        assert [read_index(f) for f in clip.frames] == clip.indices  # each sample is the frame it claims
        assert all(0 <= t < clip.duration for t in clip.timestamps)
        assert clip.timestamps == sorted(set(clip.timestamps))  # no repeated last frame, no shared stamps


def test_frames_command_reports_the_frames_written(tmp_path, capsys):
    written = 72
    path = split_hidden_frames(_encode(tmp_path / "vp9.webm", "yuv420p", written), tmp_path / "split.webm")
    assert count_packets(path) > written
    assert main(["frames", str(path), "--frames", str(written), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["source_frames"], out["duration"]) == (written, pytest.approx(written / 24, **MILLISECOND))
    assert out["frames"] == list(range(written))  # every frame once: the last one is not repeated
    assert all(0 <= t < out["duration"] for t in out["timestamps"])
