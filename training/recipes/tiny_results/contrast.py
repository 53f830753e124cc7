"""`contrast`: a VideoCLIP (or its CLIP alone, frame features averaged: `--frame-mean`) on the
held-out probe (`probe.jsonl` written by the recipe): text-to-video R@1 over clips with distinct
captions (one clip per caption), video-to-text R@1 of every clip among the distinct captions (more
queries, so less noisy); direction accuracy: the true caption must score above its time-reversed
twin ("moves left" vs "moves right", "grows" vs "shrinks"), counted over every moving / resizing
clip played forwards and backwards (a reversed clip is a true clip of the opposite motion), so that
a model blind to time scores exactly 50% whatever its biases; and the time-reversal probe (cosine
of the clip's features played forwards and backwards, and how often the preferred caption flips)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stanchat.options import SCORING_MODES
from training.recipes.tiny_results.common import caption_hits, encode_clips, read_probe, scorer

HELP = "R@1, direction accuracy and reversal probe of a VideoCLIP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="VideoCLIP directory with its tokenizer")
    parser.add_argument("--probe", type=Path, required=True, help="probe.jsonl written by the recipe")
    parser.add_argument("--scoring", default="mean", choices=SCORING_MODES, help="text-video score")
    parser.add_argument("--frame-mean", action="store_true", help="the CLIP tower alone on each frame (STAN off)")
    parser.add_argument("--frames", type=int, default=16, help="frames per video")


def run(args: argparse.Namespace) -> dict:
    return contrast(args.model, args.probe, args.scoring, args.frame_mean, args.frames)


def contrast(model_dir: Path, probe: Path, scoring: str, frame_mean: bool, frames: int) -> dict:
    """R@1, direction accuracy and the reversal probe (all %, cosine as a number) on the probe file."""
    import torch
    import torch.nn.functional as F

    items = read_probe(probe)  # a missing probe fails before the model loads
    model, scores = scorer(model_dir, scoring)
    paths = [str(probe.parent / item["video"]) for item in items]
    fwd, bwd = encode_clips(model, paths, frames, frame_mean)

    n = torch.arange(len(items))
    true, flip = [i["caption"] for i in items], [i["reversed_caption"] for i in items]
    pref_fwd = scores(true, fwd)[n, n] - scores(flip, fwd)[n, n]  # (N,) > 0: the true caption wins
    pref_bwd = scores(true, bwd)[n, n] - scores(flip, bwd)[n, n]  # (N,) < 0: right for the reversed clip
    # moves and size changes played backwards are true clips of the opposite motion; "appear" is not
    exact = torch.tensor(["answer" in i for i in items])
    right = torch.cat([pref_fwd[exact] > 0, pref_bwd[exact] < 0]).float()
    distinct = list(dict.fromkeys(true))  # in first-seen order
    keep = [true.index(c) for c in distinct]  # one clip per distinct caption: its first
    against = scores(distinct, fwd)  # (U, N): every distinct caption x every clip
    ranked = against[:, keep].argmax(dim=1)  # (U,) best clip per caption, among one clip per caption
    cosine = F.cosine_similarity(fwd.mean(1), bwd.mean(1), dim=-1)
    return {"clips": len(items), "distinct_captions": len(keep), "direction_clips": int(exact.sum()),
            "r1_t2v": 100.0 * (ranked == torch.arange(len(keep))).float().mean().item(),
            "r1_v2t": 100.0 * caption_hits(against, true, distinct).float().mean().item(),
            "direction_acc": 100.0 * right.mean().item(),
            "forward_only_acc": 100.0 * (pref_fwd[exact] > 0).float().mean().item(),
            "reversal_cosine": cosine.mean().item(),
            "reversal_flip": 100.0 * ((pref_fwd > 0) != (pref_bwd > 0))[exact].float().mean().item()}
