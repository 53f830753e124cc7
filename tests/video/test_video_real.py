"""Decoding real clips (tests/data/videos, ../shared/videos) against their measured ground truth."""

from __future__ import annotations

import av
import numpy as np
import pytest
from conftest import real_clip

from stanchat.video import load_video
from tests.floats import MILLISECOND

T = 8

# name -> (frames, fps, duration s, displayed width, height, decord accepted). Ground truth from
# /work/shared/videos/MANIFEST.md (PyAV decoding every frame); display size applies rotation and SAR.
TRUTH = {
    "yoga.mp4": (300, 30.0, 10.0, 568, 320, True),  # SAR 640/639 counts as square
    "mmaction2_test.avi": (164, 25.0, 6.56, 320, 240, True),
    "foreman_hevc.mp4": (60, 29.97, 2.002, 385, 288, True),  # SAR 128/117: 352 stored pixels show as 385
    "bear-vp9-odd-dimensions.webm": (30, 29.97, 1.001, 161, 121, False),  # decord: EAGAIN, falls back
    "decord_video_90.mov": (3, 30.0, 0.1, 320, 568, False),  # rotation -90: decord refused
    "webrtc_chrome.webm": (899, 29.97, 29.996, 480, 270, True),
    "cockatoo.mp4": (280, 20.0, 14.0, 1280, 720, True),
    "exoplayer_sample.mkv": (30, 30.0, 1.0, 1080, 720, True),  # container claims 1000 fps
}


def _sequential_reference(path, indices, size) -> np.ndarray:
    """The wanted frames by the plainest decode there is: every frame from the start, counted."""
    wanted, pictures = set(indices), {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                width, height = size if frame.rotation % 180 == 0 else size[::-1]
                if (width, height) == (frame.width, frame.height):
                    picture = frame.to_ndarray(format="rgb24")
                else:  # non-square pixels: scaled to the display size
                    picture = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BICUBIC")
                pictures[i] = np.rot90(picture, k=round(frame.rotation / 90))
    return np.stack([pictures[i] for i in indices])


@pytest.mark.parametrize("name", sorted(TRUTH))
def test_pyav_matches_ground_truth_and_a_sequential_decode(name):
    path = real_clip(name)
    frames, fps, duration, width, height, _ = TRUTH[name]
    clip = load_video(path, T, backend="pyav")
    assert (clip.source_frames, clip.width, clip.height) == (frames, width, height)
    assert clip.fps == pytest.approx(fps, rel=2e-3) and clip.duration == pytest.approx(duration, **MILLISECOND)
    assert clip.frames.shape == (T, height, width, 3)
    assert len(clip.timestamps) == T and all(0 <= t < clip.duration for t in clip.timestamps)
    expected = [min(int((i + 0.5) * frames / T), frames - 1) for i in range(T)]
    assert clip.indices == expected  # segment middles (frames repeat when the clip has fewer than T)
    distinct = sorted(set(clip.indices))
    stamps = [clip.timestamps[clip.indices.index(i)] for i in distinct]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))  # distinct frames: strictly increasing times
    reference = _sequential_reference(path, clip.indices, (width, height))
    assert np.array_equal(clip.frames, reference)  # seeking found exactly the counted frames


@pytest.mark.parametrize("name", sorted(n for n, truth in TRUTH.items() if truth[-1]))
def test_decord_returns_the_same_frames_as_pyav(name):
    path = real_clip(name)
    by_pyav = load_video(path, T, backend="pyav", size=112)
    clip = load_video(path, T, backend="decord", size=112)
    assert clip.decoder == "decord" and clip.indices == by_pyav.indices and clip.timestamps == by_pyav.timestamps
    assert clip.frames.shape == by_pyav.frames.shape
    assert np.abs(clip.frames.astype(int) - by_pyav.frames).mean() < 4  # two scalers, same pictures
    full = load_video(path, T, backend="decord")
    assert full.decoder == "decord" and full.indices == by_pyav.indices


def test_rotated_mov_is_shown_upright():
    clip = load_video(real_clip("decord_video_90.mov"), 3)
    assert clip.frames.shape == (3, 568, 320, 3) and clip.indices == [0, 1, 2]
    assert clip.timestamps == pytest.approx([0.0, 1 / 30, 2 / 30], **MILLISECOND)
