"""Which frames to show the model: sampling times over a window, then the frame on screen at each.

Every strategy first picks T times inside the window [start, end) and then takes, for each time,
the frame being displayed at that moment (the last frame whose timestamp is <= the time). Working in
time rather than in frame numbers keeps variable-frame-rate videos honest (a burst of 60 fps does not
swallow the samples) and gives the same frames as index-based sparse sampling for constant rates:
with N frames at a constant rate, "uniform" picks frame floor((i + 0.5) N / T), the middle of segment
i, exactly as TSN / Mug-STAN's test-time sampling does. With fewer frames than T, frames repeat, so the
model always receives T frames.

Strategies (names are the registry `STRATEGIES`):
- uniform: the middle of each of T equal segments (inference and tests; deterministic).
- random:  a uniformly random time inside each segment (training: the paper's sparse sampling);
           the T offsets are drawn by the caller's generator, so a seed reproduces the clip.
- fps:     one frame every 1/fps seconds from the window start; when that gives more than T frames,
           T of them are taken evenly, so the end of a long video is never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stanchat.errors import StanchatError, VideoError

if TYPE_CHECKING:
    import numpy as np

STRATEGIES = {
    "uniform": "the middle of each of T equal segments (deterministic; inference)",
    "random": "a random time inside each of T equal segments (training; needs a seed for repeatability)",
    "fps": "one frame every 1/fps seconds, at most T (evenly thinned when more)",
}

# Sampling times are compared with frame timestamps up to this tolerance (seconds), so a time that
# lands on a frame boundary picks that frame despite float rounding of pts * time_base.
TIME_EPSILON = 1e-6


def check_request(frames: int, strategy: str, fps: float | None, start: float | None, end: float | None) -> None:
    """Raise StanchatError (one line) for a sampling request that no video could satisfy."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise StanchatError(f"frames must be a whole number >= 1, got {frames!r}")
    if strategy not in STRATEGIES:
        raise StanchatError(f"unknown sampling strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if strategy == "fps" and (fps is None or not fps > 0):
        raise StanchatError(f"strategy 'fps' needs a positive fps (frames per second), got {fps!r}")
    if strategy != "fps" and fps is not None:
        raise StanchatError(f"fps={fps!r} only applies to strategy 'fps' (got strategy {strategy!r})")
    if start is not None and not start >= 0:
        raise StanchatError(f"start must be >= 0 seconds, got {start!r}")
    if end is not None and not end > (start or 0.0):
        raise StanchatError(f"end ({end!r} s) must be after start ({start or 0.0!r} s)")


def draw_offsets(strategy: str, frames: int, generator: np.random.Generator | int | None) -> tuple[float, ...] | None:
    """The T random positions in [0, 1) inside each segment for strategy 'random', else None.

    Drawn here, in the caller's process, so a seeded `generator` gives the same clip wherever the
    decoding runs; other strategies leave the generator untouched.
    """
    if strategy != "random":
        return None
    import numpy as np  # numpy loads on first use: `stanchat --help` imports this package

    rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
    return tuple(float(u) for u in rng.random(frames))


def sample_times(
    duration: float,
    frames: int,
    strategy: str,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    offsets: Sequence[float] | None = None,
) -> list[float]:
    """The sampling times in seconds (from the first frame) for a video lasting `duration` seconds."""
    lo, hi = _window(duration, start, end)
    span = hi - lo
    if strategy == "uniform":
        return [lo + (i + 0.5) * span / frames for i in range(frames)]
    if strategy == "random":
        if offsets is None or len(offsets) != frames:
            raise ValueError(f"strategy 'random' needs {frames} offsets, got {offsets!r}")
        return [lo + (i + u) * span / frames for i, u in enumerate(offsets)]
    if strategy == "fps":
        count = max(1, math.ceil(span * fps - TIME_EPSILON))  # times lo, lo + 1/fps, ... < hi
        grid = [lo + k / fps for k in range(count)]
        if count <= frames:
            return grid
        return [grid[int((i + 0.5) * count / frames)] for i in range(frames)]  # thin evenly to T
    raise StanchatError(f"unknown sampling strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")


def frames_at(timestamps: Sequence[float], times: Sequence[float]) -> list[int]:
    """For each time, the index of the frame on screen then: the last one with timestamp <= time."""
    import numpy as np

    ts = np.asarray(timestamps, dtype=np.float64)  # (N,) non-decreasing
    idx = np.searchsorted(ts, np.asarray(times, dtype=np.float64) + TIME_EPSILON, side="right") - 1
    return np.clip(idx, 0, len(ts) - 1).tolist()


def window_seconds(duration: float, start: float | None, end: float | None) -> float:
    """How many seconds of a video lasting `duration` the window [start, end) covers."""
    lo, hi = _window(duration, start, end)
    return hi - lo


def _window(duration: float, start: float | None, end: float | None) -> tuple[float, float]:
    """The sampled window [lo, hi) in seconds, checked against the video's duration."""
    lo = start or 0.0
    if duration <= 0:  # a still image: one instant, only the default window makes sense
        if lo > 0:
            raise VideoError(f"start {lo:g} s is past the end of a still image (it has no duration)")
        return 0.0, 0.0
    if lo >= duration:
        raise VideoError(f"start {lo:g} s is past the end of the video ({duration:.3f} s long)")
    hi = duration if end is None else min(end, duration)
    return lo, hi
