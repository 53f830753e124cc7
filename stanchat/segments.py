"""`--temporal segments`: the T frames split into S consecutive windows, each its own image's worth.

A video of several events overflows one image's tokens: STAN pools T frames into L+1 tokens, and a
question about the third of four events reads a quarter of them. Segments keep the graft as it is
and give the LLM S blocks instead, in time order, each introduced by its time span in text:

    USER: 0.0-2.0 s: <image>
    2.0-4.0 s: <image>
    ...
    Which way does the red circle move? ASSISTANT:

so the LLM reads S x N video tokens (N = one image's, L or L+1 by the strategy) and can tell the
blocks apart by when they happened. Window shares: when S does not divide T, the first T mod S
windows take ceil(T / S) frames and the rest floor(T / S) (as `numpy.array_split`), so every frame
is used once and windows differ by at most one frame.

Light at import (no numpy, no torch): the prompt builder and `--help` use it.
"""

from __future__ import annotations

from collections.abc import Sequence

SPAN_DIGITS = 1  # decimals of a span's seconds in the prompt


def window_bounds(frames: int, segments: int) -> list[tuple[int, int]]:
    """[start, stop) frame indices of S consecutive windows covering T frames; the first T mod S
    windows hold one frame more. (T, S) -> S pairs."""
    base, extra = divmod(frames, segments)
    bounds, start = [], 0
    for i in range(segments):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def window_spans(timestamps: Sequence[float], segments: int, end: float | None = None) -> list[tuple[float, float]]:
    """(start, end) seconds of each window: from its first frame's time to the next window's first
    frame's time; the last window ends at `end` (the clip's end), or at its last frame's time."""
    bounds = window_bounds(len(timestamps), segments)
    starts = [float(timestamps[a]) for a, _ in bounds]
    last = float(timestamps[-1]) if end is None else max(float(end), float(timestamps[-1]))
    return [(start, stop) for start, stop in zip(starts, starts[1:] + [last])]


def layout(spans: Sequence[tuple[float, float]], image_token: str) -> str:
    """The text that stands for the video in the prompt: one line per window, its span then its
    placeholder ("0.0-2.0 s: <image>"), joined by newlines."""
    return "\n".join(f"{a:.{SPAN_DIGITS}f}-{b:.{SPAN_DIGITS}f} s: {image_token}" for a, b in spans)
