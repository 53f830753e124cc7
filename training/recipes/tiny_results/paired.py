"""`paired`: video-to-text R@1 (`contrast`'s r1_v2t) of two (model, scoring) pairs on the same
clips, paired, with the exact sign-test p-value of the clips only one of them gets right."""

from __future__ import annotations

import argparse
from pathlib import Path

from stanchat.options import SCORING_MODES
from training.recipes.tiny_results.common import caption_hits, encode_clips, read_probe, scorer, sign_test_p

HELP = "video-to-text R@1 of two models (or scorings) on the same clips, paired"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--first", required=True, type=model_scoring, metavar="DIR:SCORING",
                        help="VideoCLIP directory and scoring, e.g. stan:mug")
    parser.add_argument("--second", required=True, type=model_scoring, metavar="DIR:SCORING",
                        help="the model and scoring to compare with")
    parser.add_argument("--probe", type=Path, required=True, help="probe.jsonl written by the recipe")
    parser.add_argument("--frames", type=int, default=16, help="frames per video")


def run(args: argparse.Namespace) -> dict:
    return paired_captions(args.first, args.second, args.probe, args.frames)


def model_scoring(value: str) -> tuple[Path, str]:
    """"DIR:SCORING" -> (Path(DIR), SCORING) (an argparse type: a bad value is a usage error)."""
    directory, _, scoring = value.rpartition(":")
    if not directory or scoring not in SCORING_MODES:
        raise argparse.ArgumentTypeError(f"expected DIR:SCORING with scoring {', '.join(SCORING_MODES)}, got {value!r}")
    return Path(directory), scoring


def paired_captions(first: tuple[Path, str], second: tuple[Path, str], probe: Path, frames: int) -> dict:
    """Video-to-text R@1 (`contrast`'s r1_v2t) of two (VideoCLIP directory, scoring) pairs on the same
    clips, paired: how many clips only one of them gets right, and the exact two-sided sign-test
    (McNemar) p-value of that split."""
    items = read_probe(probe)
    paths = [str(probe.parent / item["video"]) for item in items]
    captions = [item["caption"] for item in items]
    distinct = list(dict.fromkeys(captions))
    hits = []
    for model_dir, scoring in (first, second):
        model, scores = scorer(model_dir, scoring)
        hits.append(caption_hits(scores(distinct, encode_clips(model, paths, frames, False)[0]), captions, distinct))
    a, b = hits
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return {"clips": len(items), "r1_v2t_first": 100.0 * a.float().mean().item(),
            "r1_v2t_second": 100.0 * b.float().mean().item(), "both": int((a & b).sum()),
            "only_first": only_a, "only_second": only_b, "p_value": sign_test_p(only_a, only_b)}
