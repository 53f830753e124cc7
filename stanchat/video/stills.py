"""A video given as its frames, one still image each (as GPT-4-style clients and lmms-eval send one):
the images, in order -> one `SampledFrames`.

    picks = pick_uniform(len(paths), frames)                 # which images: segment middles, as sample.py
    clip = load_stills([paths[i] for i in picks], picks, len(paths), fit=pre.fit)

Each image is read as `load_video` reads a still image (in the decode worker, its size checked
against `max_pixels` before it is decoded, fitted to the tower's input there), so this process holds
T x crop x crop x 3 bytes whatever the images' size. The images carry no times of their own: image
i is at i / fps seconds when the sender says its rate, else at i seconds (one image a second).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from stanchat.errors import StanchatError, VideoError
from stanchat.video.load import DEFAULT_TIMEOUT, SampledFrames, load_video
from stanchat.video.sample import frames_at, sample_times

if TYPE_CHECKING:
    from stanchat.video.fit import Fit

STILLS_DECODER = "stills"  # SampledFrames.decoder of a clip assembled from images


def pick_uniform(count: int, frames: int) -> list[int]:
    """The positions of `frames` of `count` images taken uniformly: the image at the middle of each of
    `frames` equal segments (`stanchat.video.sample`'s uniform strategy over one image a second);
    every image, in order, when there are no more than `frames`."""
    if count < 1 or frames < 1:
        raise StanchatError(f"need at least one image and one frame, got {count} images and frames={frames}")
    if count <= frames:
        return list(range(count))
    return frames_at(list(range(count)), sample_times(float(count), frames, "uniform"))


def load_stills(paths: Sequence[str | os.PathLike], positions: Sequence[int], count: int,
                fps: float | None = None, *, fit: "Fit | None" = None, max_pixels: int | None = None,
                timeout: float | None = DEFAULT_TIMEOUT, cancel: threading.Event | None = None,
                labels: Sequence[str] | None = None) -> SampledFrames:
    """The images at `paths` (each a still image; `positions`: their places in the sender's list of
    `count` images) as one clip: frames (T, crop, crop, 3) with a `fit`, else (T, H, W, 3) (then all
    images must share a size).
    A VideoError names the image at fault by its label (default: its path)."""
    import numpy as np

    if len(paths) != len(positions) or not paths or max(positions) >= count:
        raise StanchatError(f"give one position (< count) per image, got {len(paths)} images, positions "
                            f"{list(positions)[:8]} and count {count}")
    if fps is not None and not fps > 0:
        raise StanchatError(f"fps must be > 0, got {fps!r}")
    labels = [os.fspath(p) for p in paths] if labels is None else labels
    pictures, first = [], None
    for path, label in zip(paths, labels):
        try:
            still = load_video(path, frames=1, fit=fit, max_pixels=max_pixels, timeout=timeout, cancel=cancel)
        except VideoError as err:
            raise VideoError(str(err).replace(os.fspath(path), label)) from err
        first = first or still
        if still.frames.shape[1:] != first.frames.shape[1:]:
            raise VideoError(f"{label} is {still.width}x{still.height}, unlike the first image; without a fit "
                             "every image of a video must have one size")
        pictures.append(still.frames[0])  # (H, W, 3)
    rate = 1.0 if fps is None else float(fps)
    return replace(first, frames=np.stack(pictures),  # T x (H, W, 3) -> (T, H, W, 3)
                   timestamps=[i / rate for i in positions], indices=list(positions), fps=rate,
                   duration=count / rate, source_frames=count, decoder=STILLS_DECODER,
                   path=labels[0])
