"""`--select question`: the question picks the frames the graft sees (Mug's text-to-frame weights).

A video of several events spends one image's tokens on all of them; a question is usually about
one. So: sample C candidate frames uniformly (`--candidates`, at most `MAX_CANDIDATES` and at most
the video's own frames), score them against the question with Mug's text-guided frame weights
(paper Eq. 11-13; `stanchat.relevance.FrameRelevance`, the VideoCLIP the STAN belongs to, no
second model), and hand the graft the `--frames` frames the question is about.

The rule (`RULE`, chosen by measurement on the synthetic world's multi-event clips,
`python -m training.recipes.tiny_results events`, docs/RESULTS.md section 7): a contiguous window of
the `frames` consecutive candidates of highest total weight. Against the alternatives measured on the
same clips (`RULES`): several windows (two half-windows) split the asked event across two pieces of
a mostly irrelevant neighbour; BOLT-style inverse transform sampling (frames at the quantiles of the
weights' cumulative sum) and the top-k frames both scatter frames over every event the question's
words touch and repeat or skip frames, and STAN models motion between neighbouring frames, so
gaps and jumps turn into false motion. A window keeps the frames in order at their sampled spacing,
as F2C found for key clips against key frames. With the weights below the four rules' hit rates
are close (dev clips: 92.7-96.9% at 4 events); the window is kept. On the held-out clips, run once
after these choices (seed 7, 18 clips per count), it answered 100.0 / 97.2 / 93.8% at 2 / 4 / 8 events,
the other rules 74.3-97.2% (RESULTS.md section 7).

The weights (`FrameRelevance.weights`): the question read by the text tower without the words its
tokenizer does not know, every remaining token (start and end included) attending, against each
candidate's CLIP feature (`SCORER` "tower": CLIP alone, no STAN). Chosen on dev clips of another
seed than the held-out ones (seeds 101 and 202; 192 questions on 4-event clips, 48 on 2, 96 on 8),
counting a selection right when more than half its frames show an event that answers the question
as the asked one does: main's reading (unknown words read, then only the words scored, STAN chunks)
77.6% at 4 events; unknown words dropped before the tower 92.2% (STAN chunks) and 95.8% (tower);
2 events 97.9% either way; 8 events 90.6% (STAN chunks) and 94.8% (tower). The question names its
actor ("the cyan triangle"), which single frames show; STAN run over 64 candidates of four or eight
events mixes them (its training clips held one event), and scoring each 16-candidate window as a
clip with STAN was worse still (mean similarity 87.5%, Mug 66.7-79.2% at 4 events), as it needs
the motion words the tiny tokenizer lacks ("move", "grow": only "moves", "grows"). Scoring the
question's words one by one and combining them (sum, min, z-scores; unknown words still read) put
the window inside the asked event 43-64% of the time, main 66%.

Scoring (`SCORERS`): "tower" runs CLIP on every candidate, in chunks; "window" runs the VideoCLIP
(CLIP + STAN) on consecutive chunks of at most 64 candidates (STAN's own path up to 64).

Candidates are decoded at the model's input size (the shorter side of the larger of the LLaVA's
and the scoring tower's inputs), so C frames cost C x size^2 x 3 bytes however large the source.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from stanchat.errors import StanchatError
from stanchat.options import MAX_CANDIDATES, VideoOptions

if TYPE_CHECKING:
    import torch

    from stanchat.video import SampledFrames

SCORERS = ("window", "tower")
SCORER = "tower"


def window(weights: Sequence[float], frames: int) -> list[int]:
    """The `frames` consecutive candidates of highest total weight (the earliest of equal ones)."""
    frames = min(frames, len(weights))
    total = best = sum(weights[:frames])
    start = 0
    for s in range(1, len(weights) - frames + 1):
        total += weights[s + frames - 1] - weights[s - 1]
        if total > best + 1e-12:
            best, start = total, s
    return list(range(start, start + frames))


def windows(weights: Sequence[float], frames: int, pieces: int = 2) -> list[int]:
    """`pieces` non-overlapping windows of frames / pieces candidates, the heaviest first, in time order."""
    size = max(1, frames // pieces)
    taken: set[int] = set()
    for _ in range(pieces):
        masked = [-1.0 if any(i + j in taken for j in range(size)) else sum(weights[i:i + size])
                  for i in range(len(weights) - size + 1)]
        start = max(range(len(masked)), key=masked.__getitem__)
        if masked[start] < 0:
            break
        taken.update(range(start, start + size))
    return sorted(taken)[:frames]


def inverse(weights: Sequence[float], frames: int) -> list[int]:
    """BOLT-style inverse transform sampling: the candidate at each quantile (i + 0.5) / frames of
    the weights' cumulative sum; heavy regions get many frames (repeats allowed, time order)."""
    total = sum(weights)
    cumulative, running = [], 0.0
    for w in weights:
        running += w / total
        cumulative.append(running)
    chosen, at = [], 0
    for i in range(frames):
        q = (i + 0.5) / frames
        while at < len(cumulative) - 1 and cumulative[at] < q:
            at += 1
        chosen.append(at)
    return chosen


def top(weights: Sequence[float], frames: int) -> list[int]:
    """The `frames` single heaviest candidates, in time order."""
    return sorted(sorted(range(len(weights)), key=lambda i: -weights[i])[:frames])


RULES: dict[str, Callable[[Sequence[float], int], list[int]]] = {
    "window": window, "windows": windows, "inverse": inverse, "top": top}
RULE = "window"


def choose(weights: Sequence[float], frames: int, rule: str = RULE) -> list[int]:
    """Indices (time order) of the candidates handed to the graft, by `rule`."""
    if rule not in RULES:
        raise StanchatError(f"unknown selection rule {rule!r}; choose one of {', '.join(RULES)}")
    return RULES[rule](list(weights), frames)


@dataclass(frozen=True)
class Candidates:
    """A video's candidate frames and their features for scoring; kept per video so that every
    question of a conversation is scored without decoding again."""

    clip: "SampledFrames"  # (C, H, W, 3) uint8 at the model's input size, uniform over the video (or window)
    features: "torch.Tensor"  # (C, P) per-frame features on the scoring model's device
    decode_seconds: float  # decoding the candidates
    score_seconds: float  # the scoring tower on them


def subclip(clip: "SampledFrames", indices: Sequence[int]) -> "SampledFrames":
    """The frames of `clip` at `indices`, with their timestamps and source indices."""
    return replace(clip, frames=clip.frames[list(indices)], timestamps=[clip.timestamps[i] for i in indices],
                   indices=[clip.indices[i] for i in indices])


def distinct(clip: "SampledFrames") -> "SampledFrames":
    """`clip` without repeated source frames (a video shorter than the candidates asked repeats them):
    the candidates are capped by the video's own frame count."""
    keep = [i for i, index in enumerate(clip.indices) if index not in clip.indices[:i]]
    return clip if len(keep) == len(clip.indices) else subclip(clip, keep)


def decode_candidates(video: "str | os.PathLike | SampledFrames", options: VideoOptions, size: int,
                      limits: dict) -> "SampledFrames":
    """The candidate frames: `options.candidates` sampled uniformly over the video (or its window
    [start, end)), decoded at shorter side `size`, repeats dropped; `limits`: load_video's
    max_seconds, max_pixels and cancel. A decoded clip is its own candidates."""
    from stanchat.video import SampledFrames, load_video

    if isinstance(video, SampledFrames):
        if len(video.timestamps) > MAX_CANDIDATES:
            raise StanchatError(f"a decoded clip of {len(video.timestamps)} frames is more than the {MAX_CANDIDATES} "
                                f"candidates question-guided selection scores; pass fewer frames", param="candidates")
        return video
    return distinct(load_video(video, frames=options.candidates, start=options.start, end=options.end, size=size,
                               **limits))


def no_text_tower() -> StanchatError:
    return StanchatError(lambda w: f"{w.name('select')} question needs the text tower beside the STAN (its tokenizer "
                                   f"saved with the STAN weights), and this model has none; {w.set('select', 'uniform')}",
                         param="select")


def no_question() -> StanchatError:
    return StanchatError(lambda w: f"{w.name('select')} question chooses frames for a question; encode with the "
                                   "question (VideoChat.encode(video, options, question=...))", param="select")
