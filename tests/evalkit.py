"""Fixtures for `stanchat eval` tests: a tiny VideoCLIP with its tokenizer and synthetic datasets
in every format, written once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny import randomise

N_CLIPS = 4  # clips per synthetic dataset; the last one's file is deliberately not written
FRAMES = "4"  # frames per video in every command run


def save_eval_model(directory: Path, seed: int = 0, blind: bool = False) -> Path:
    """A tiny VideoCLIP (training.tiny_backbone's CLIP, width 32, 16 px, STAN depth 2) and its word-level
    tokenizer. `blind` zeroes the temporal embedding and temporal_fc, which makes the model's
    frame-mean feature independent of frame order."""
    import torch
    from transformers import AutoTokenizer

    from stanchat.stan import STANConfig
    from stanchat.videoclip import VideoCLIP
    from training.tiny_backbone import write_tiny_backbone

    clip_dir = write_tiny_backbone(directory.with_name(directory.name + "-clip"), seed=seed)
    model = VideoCLIP.from_clip_pretrained(str(clip_dir), STANConfig(depth=2))
    randomise(model.stan, seed=seed, std=0.2)
    if blind:
        with torch.no_grad():
            model.stan.time_embed.weight.zero_()
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(clip_dir).save_pretrained(directory)
    return directory


def write_synthetic(root: Path, fmt: str, n: int = N_CLIPS, task: str | None = None, seed: int = 0):
    """A synthetic dataset in format `fmt` (32 px, 8 frames), its last clip's file missing."""
    from training.synthworld import WorldConfig, write_dataset

    return write_dataset(root, fmt, n=n, seed=seed, config=WorldConfig(size=32, frames=8), task=task, missing=1)


def write_reverse_jsonl(root: Path, n: int = N_CLIPS) -> Path:
    """Direction-contrast probe data: each clip's caption, its time-flipped twin, and a question
    with the answers for both directions."""
    from training.synthworld import WorldConfig, caption, contrast_caption, flipped, qa_pairs, write_dataset

    world = WorldConfig(size=32, frames=8, motions=("left", "right", "up", "down", "grow", "shrink"))
    data = write_dataset(root, "jsonl", n=n, seed=1, config=world)
    lines = []
    for spec in data.specs:
        question, answer = qa_pairs(spec)[0]
        lines.append({"video": f"videos/{spec.clip_id}.mp4", "caption": caption(spec, noise=False),
                      "reversed_caption": contrast_caption(spec), "question": question, "answer": answer,
                      "reversed_answer": dict(qa_pairs(flipped(spec)))[question]})
    path = root / "reverse.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture(scope="session")
def eval_world(tmp_path_factory) -> dict:
    """Paths of the tiny model, a frame-order-blind twin, and datasets in every eval format."""
    root = tmp_path_factory.mktemp("evalworld")
    world = {"model": save_eval_model(root / "model"), "blind": save_eval_model(root / "blind", blind=True),
             "reverse": write_reverse_jsonl(root / "reverse")}
    for fmt in ("msrvtt", "didemo", "lsmdc", "k400", "ucf101", "hmdb51", "msvd-qa", "msrvtt-qa", "activitynet-qa"):
        world[fmt] = write_synthetic(root / fmt, fmt)
    for task in ("retrieval", "recognition", "qa"):
        for fmt in ("jsonl", "csv"):
            world[f"{fmt}-{task}"] = write_synthetic(root / f"{fmt}-{task}", fmt, task=task)
    return world


def error_line(stderr: str) -> str:
    """The CLI's one error line, never a traceback (warnings and progress bars may come before it)."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("stanchat: error: ")]
    assert len(lines) == 1 and stderr.rstrip("\n").endswith(lines[0]), stderr
    return lines[0]
