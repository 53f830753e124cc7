"""A decoder that fails the same way on many clips is warned about once, then logged at debug level."""

from __future__ import annotations

import logging

import pytest

from stanchat.video import load as video_load
from stanchat.video import load_video
from stanchat.video.backends import BACKENDS, BackendError


class _Refuses:
    """A backend that refuses every clip, naming the clip and a per-clip number in its reason."""

    name = "refuser"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def decode(self, info, indices, size, tick, transform):
        raise BackendError(f"{self.reason} {info.count} frames in {info.path}")


@pytest.fixture(autouse=True)
def _fresh_causes(monkeypatch):
    monkeypatch.setattr(video_load, "_FALLBACK_CAUSES", set())


def test_fallback_warns_once_per_cause(generated, caplog):
    caplog.set_level(logging.DEBUG, logger="stanchat.video")
    clips = [generated["h264.mp4"], generated["h264.mkv"], generated["vp9.webm"]]
    same = _Refuses("cannot count")
    for path in clips:
        load_video(path, 4, backend=[same, BACKENDS["pyav"]], timeout=None)
    load_video(clips[0], 4, backend=[_Refuses("another cause:"), BACKENDS["pyav"]], timeout=None)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2, warned  # one per cause, not one per clip
    assert "cannot count" in warned[0] and "another cause" in warned[1]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and "refuser could not" in r.getMessage()]
    assert len(debug) == 2  # the other two clips are still logged, at debug level
