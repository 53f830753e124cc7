"""Sampling times and the frames on screen at those times (no decoding)."""

from __future__ import annotations

import numpy as np
import pytest

from stanchat.errors import StanchatError, VideoError
from stanchat.video.sample import check_request, draw_offsets, frames_at, sample_times


def _indices(n, t, strategy="uniform", fps=None, start=None, end=None, offsets=None, rate=30.0):
    stamps = [i / rate for i in range(n)]
    return frames_at(stamps, sample_times(n / rate, t, strategy, fps, start, end, offsets))


@pytest.mark.parametrize("n, t", [(300, 16), (164, 8), (17, 16), (16, 16), (1000, 7), (3, 8), (1, 4)])
def test_uniform_is_tsn_segment_middles(n, t):
    assert _indices(n, t) == [int((i + 0.5) * n / t) for i in range(t)]


def test_random_is_one_frame_per_segment_and_follows_the_offsets():
    offsets = draw_offsets("random", 10, 3)
    assert offsets == draw_offsets("random", 10, np.random.default_rng(3)) != draw_offsets("random", 10, 4)
    picked = _indices(100, 10, "random", offsets=offsets)
    assert all(10 * i <= k < 10 * (i + 1) for i, k in enumerate(picked))
    assert picked == [int((i + u) * 10) for i, u in enumerate(offsets)]
    assert _indices(100, 10, "random", offsets=[0.0] * 10) == list(range(0, 100, 10))


def test_only_random_draws_from_the_generator():
    rng = np.random.default_rng(0)
    assert draw_offsets("uniform", 8, rng) is None
    assert rng.random() == np.random.default_rng(0).random()  # untouched


def test_fps_steps_then_thins_evenly_to_keep_the_end():
    assert _indices(300, 64, "fps", fps=2.0) == list(range(0, 300, 15))  # 20 frames, one every 0.5 s
    thinned = _indices(3000, 8, "fps", fps=30.0)  # 3000 grid times (100 s) > 8: spread over the whole video
    assert thinned == [187, 562, 937, 1312, 1687, 2062, 2437, 2812]


def test_window_limits_every_strategy():
    assert _indices(300, 4, start=2.0, end=4.0) == [67, 82, 97, 112]  # 2-4 s at 30 fps: frames 60-119
    assert all(60 <= k < 120 for k in _indices(300, 4, "random", start=2.0, end=4.0, offsets=[0.9] * 4))
    assert _indices(300, 100, "fps", fps=1.0, start=7.5) == [225, 255, 285]
    assert _indices(300, 2, end=99.0) == _indices(300, 2)  # an end past the video is the end


def test_variable_frame_rate_samples_time_not_frame_numbers():
    stamps = [i / 60 for i in range(60)] + [1 + i for i in range(4)]  # 60 frames in 1 s, then 1 fps
    picked = frames_at(stamps, sample_times(5.0, 5, "uniform"))
    assert [stamps[k] for k in picked] == [0.5, 1.0, 2.0, 3.0, 4.0]


def test_boundary_times_pick_the_frame_that_starts_there():
    stamps = [float(np.float32(i * 0.1)) for i in range(10)]  # timestamps with float32 rounding
    assert frames_at(stamps, [0.3, 0.7, 0.0, 5.0]) == [3, 7, 0, 9]


def test_still_image_has_one_instant():
    assert frames_at([0.0], sample_times(0.0, 3, "uniform")) == [0, 0, 0]
    with pytest.raises(VideoError, match="still image"):
        sample_times(0.0, 3, "uniform", start=1.0)


@pytest.mark.parametrize(
    "args, words",
    [
        ((0, "uniform", None, None, None), "frames must be"),
        ((2.5, "uniform", None, None, None), "frames must be"),
        ((True, "uniform", None, None, None), "frames must be"),
        ((4, "middle", None, None, None), "choose one of: uniform, random, fps"),
        ((4, "fps", 0.0, None, None), "positive fps"),
        ((4, "uniform", 2.0, None, None), "only applies"),
        ((4, "uniform", None, -1.0, None), "start must be"),
        ((4, "uniform", None, 3.0, 3.0), "must be after start"),
    ],
)
def test_bad_requests(args, words):
    with pytest.raises(StanchatError, match=words):
        check_request(*args)


def test_more_than_64_frames_is_allowed_here():
    check_request(256, "uniform", None, None, None)
    assert len(_indices(1000, 256)) == 256


def test_start_past_the_end():
    with pytest.raises(VideoError, match="past the end of the video"):
        sample_times(10.0, 4, "uniform", start=10.0)
