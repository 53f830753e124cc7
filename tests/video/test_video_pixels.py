"""The frame-size ceiling (`load_video(max_pixels=)`): absurd frames are refused after the probe,
before any frame is decoded, in one line naming the size, the limit and how to raise it."""

from __future__ import annotations

import os
import signal
from fractions import Fraction

import pytest
from videogen import make_clip

from stanchat.errors import ResourceError, StanchatError, VideoError
from stanchat.options import MAX_FRAME_PIXELS
from stanchat.video import load_video
from stanchat.video.load import check_pixels


class DiesIfCalled:
    """A decoder that kills its worker: a job that reaches decoding ends in ResourceError."""

    name = "dies"

    def decode(self, info, indices, size, tick, transform):
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("pixels") / "clip.mp4", frames=4, width=64, height=48)


def test_frames_over_the_limit_are_refused_before_decoding(clip):
    with pytest.raises(VideoError) as err:
        load_video(clip, 2, backend=[DiesIfCalled()], max_pixels=64 * 48 - 1)
    assert str(err.value) == (f"{clip} has 64x48 frames (0.0 megapixels), more than the limit of 3,071 pixels a "
                              "frame; send a smaller video, or raise --max-frame-pixels")
    with pytest.raises(ResourceError):  # at the limit it is decoded (and the decoder dies)
        load_video(clip, 2, backend=[DiesIfCalled()], max_pixels=64 * 48)
    assert load_video(clip, 2, max_pixels=64 * 48).frames.shape == (2, 48, 64, 3)
    assert load_video(clip, 2).frames.shape == (2, 48, 64, 3)  # no limit by default


def test_the_larger_of_the_displayed_and_stored_size_counts(tmp_path):
    """Pixels 1:4 wide: shown 16x48, stored 64x48; the decoder holds the stored frames."""
    narrow = make_clip(tmp_path / "narrow.mp4", frames=2, width=64, height=48, pixel_aspect=Fraction(1, 4))
    with pytest.raises(VideoError, match="has 64x48 frames"):
        load_video(narrow, 1, max_pixels=64 * 48 - 1)
    wide = make_clip(tmp_path / "wide.mp4", frames=2, width=64, height=48, pixel_aspect=Fraction(4, 1))
    with pytest.raises(VideoError, match="has 256x48 frames"):
        load_video(wide, 1, max_pixels=64 * 48)


@pytest.mark.parametrize("size", [(7680, 4320), (4320, 7680), (8192, 4320), (8192, 4352)])
def test_the_servers_default_takes_8k(size):
    check_pixels("v.mp4", size, MAX_FRAME_PIXELS)


@pytest.mark.parametrize("size", [(16384, 16384), (8192, 8192), (6000, 6000)])
def test_the_servers_default_refuses_larger(size):
    with pytest.raises(VideoError, match=f"{size[0]}x{size[1]} frames .* 35,651,584 pixels"):
        check_pixels("v.mp4", size, MAX_FRAME_PIXELS)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "8K"])
def test_a_bad_limit_is_one_line(clip, bad):
    with pytest.raises(StanchatError, match="max_pixels must be a whole number of pixels >= 1 or None"):
        load_video(clip, 2, max_pixels=bad)
