"""`videoqa`: zero-shot QA ("Which way does the red circle move?") of the grafted LLaVA, exact
match on the synthetic world's one-word answers, each clip asked forwards and backwards; and the
same clips described freely."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.recipes.tiny_results.common import (DESCRIBE, DIRECTION_Q, compare_description, load_preset,
                                                  preset_folder, read_probe)

HELP = "zero-shot video QA of a preset on held-out QA clips"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", type=Path, required=True, help="preset folder with llava/ and stan/")
    parser.add_argument("--probe", type=Path, required=True, help="probe.jsonl written by the recipe (held-out clips)")
    parser.add_argument("--temporal", default="stan", choices=["stan", "mean"], help="how frames reach the LLM")
    parser.add_argument("--frames", type=int, default=16, help="frames per video")
    parser.add_argument("--limit", type=int, default=0, help="at most this many clips (0: all)")


def run(args: argparse.Namespace) -> dict:
    read_probe(args.probe)  # a missing probe fails before the model loads
    return video_qa(preset_folder(args.preset), args.probe, args.temporal, args.frames, args.limit)


def ask_examples(preset: Path, examples: list[dict], question: str, frames: int) -> list[dict]:
    """`question` about each example, with the graft and with frame-mean tokens."""
    chat = load_preset(preset)
    out = []
    for example in examples:
        answers = {t: chat.ask(example["video"], question, frames=frames, temporal=t,
                               max_new_tokens=16).text for t in ("stan", "mean")}
        out.append({**example, **answers})
    return out


def video_qa(preset: Path, probe: Path, temporal: str, frames: int, limit: int = 0) -> dict:
    """Exact-match accuracy (%) of the chat model's one-word answers to the probe's direction and
    size questions ("Which way does the red circle move?"), asked about every clip played forwards
    (truth: `answer`) and backwards (truth: `reversed_answer`), so that a model blind to time gets at
    most 50% whatever its biases; and its free description of the same clips ("What happens in this
    video?" against the caption, or its reversed twin): whole sentence, colour, shape and motion
    words (`describe_*`). `limit` > 0 caps the number of clips."""
    from dataclasses import replace

    from stanchat.video import load_video

    chat = load_preset(preset)
    items = read_probe(probe)
    items = [i for i in items if "question" in i][: limit or None]
    hits = {"direction": [], "size": []}
    described = {"exact": [], "colour": [], "shape": [], "motion": []}
    for item in items:
        clip = load_video(str(probe.parent / item["video"]), frames=frames)
        backwards = replace(clip, frames=clip.frames[::-1].copy())
        kind = "direction" if item["question"].startswith(DIRECTION_Q) else "size"
        for video, truth, caption in ((clip, item["answer"], item["caption"]),
                                      (backwards, item["reversed_answer"], item["reversed_caption"])):
            answer = chat.ask(video, item["question"], frames=frames, temporal=temporal, max_new_tokens=4).text
            hits[kind].append(answer.strip().lower() == truth)
            description = chat.ask(video, DESCRIBE, frames=frames, temporal=temporal, max_new_tokens=12).text
            for part, ok in compare_description(description, caption).items():
                described[part].append(ok)
    total = hits["direction"] + hits["size"]
    return {"clips": len(items), "questions": len(total), "accuracy": 100.0 * sum(total) / max(len(total), 1),
            **{k: 100.0 * sum(v) / max(len(v), 1) for k, v in hits.items()},
            **{f"describe_{k}": 100.0 * sum(v) / max(len(v), 1) for k, v in described.items()},
            "counts": {k: len(v) for k, v in hits.items()}}
