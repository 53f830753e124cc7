"""Measurements of the tiny recipe on held-out synthetic clips (the numbers of docs/RESULTS.md).

    python -m training.recipes.tiny_results videoqa --preset DIR --data DIR [--temporal stan|mean]

`videoqa`: zero-shot QA ("Which way does the red circle move?") of the grafted LLaVA, exact match
on the synthetic world's one-word answers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DIRECTION_Q, SIZE_Q = "Which way does", "grow or shrink?"


def load_preset(preset: Path):
    """The grafted chat model of a preset folder (llava/ + stan/) on the CPU."""
    from stanchat.chat import load

    return load(llava=str(preset / "llava"), stan=str(preset / "stan"), device="cpu", dtype="float32")


def ask_examples(preset: Path, examples: list[dict], question: str, frames: int) -> list[dict]:
    """`question` about each example, with the graft and with frame-mean tokens."""
    chat = load_preset(preset)
    out = []
    for example in examples:
        answers = {t: chat.ask(example["video"], question, frames=frames, temporal=t,
                               max_new_tokens=16).text for t in ("stan", "mean")}
        out.append({**example, **answers})
    return out


def qa_records(data: Path) -> list:
    """The held-out QA records (jsonl, split test) whose answers the image model was taught to give:
    direction, size change, colour and shape questions (not "which shape appears first")."""
    from stanchat.datasets import read_dataset

    records = read_dataset("jsonl", str(data), split="test", task="qa")
    return [r for r in records if "appears" not in r.question]


def video_qa(preset: Path, data: Path, temporal: str, frames: int, limit: int = 0) -> dict:
    """Exact-match accuracy (%) of the chat model's answers on held-out QA; `limit` > 0 caps the
    number of questions. Each video is decoded once."""
    from stanchat.video import load_video

    chat = load_preset(preset)
    records = qa_records(data)[: limit or None]
    hits, kinds, clips = [], [], {}
    for record in records:
        clip = clips.setdefault(record.video, load_video(record.video, frames=frames))
        answer = chat.ask(clip, record.question, frames=frames, temporal=temporal, max_new_tokens=8).text
        hits.append(answer.strip().lower() == record.answer.strip().lower())
        kinds.append("direction" if record.question.startswith(DIRECTION_Q) else
                     "size" if record.question.endswith(SIZE_Q) else "other")

    def rate(kind: str | None) -> float:
        chosen = [h for h, k in zip(hits, kinds) if kind is None or k == kind]
        return 100.0 * sum(chosen) / max(len(chosen), 1)

    return {"questions": len(hits), "accuracy": rate(None), "direction": rate("direction"), "size": rate("size"),
            "other": rate("other"), "counts": {k: kinds.count(k) for k in ("direction", "size", "other")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.tiny_results", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    qa = sub.add_parser("videoqa", help="zero-shot video QA of a preset on held-out QA clips")
    qa.add_argument("--preset", type=Path, required=True, help="preset folder with llava/ and stan/")
    qa.add_argument("--data", type=Path, required=True, help="held-out QA data root (jsonl, split test)")
    qa.add_argument("--temporal", default="stan", choices=["stan", "mean"], help="how frames reach the LLM")
    qa.add_argument("--frames", type=int, default=16, help="frames per video")
    qa.add_argument("--limit", type=int, default=0, help="at most this many questions (0: all)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    result = video_qa(args.preset, args.data, args.temporal, args.frames, args.limit)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
