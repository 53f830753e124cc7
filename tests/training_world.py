"""Synthetic datasets for the training tests, written once per test session with
`training.synthworld` (real 16 px videos, the real annotation formats)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.synthworld import WorldConfig, write_dataset

WORLD = WorldConfig(size=16, frames=8, fps=8)
# (format, split, clips) written for the tests; each format gets its own data root
SPLITS = (
    ("msrvtt", "train", 8), ("msrvtt", "test", 4),
    ("webvid", "train", 8), ("didemo", "train", 4), ("lsmdc", "train", 4),
    ("k400", "train", 4), ("ucf101", "train", 8), ("ucf101", "test", 4), ("hmdb51", "train", 4),
    ("csv", "train", 4),
)
TINY = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    """A folder with one data root per format: `world / "msrvtt"`, `world / "ucf101"`, ..."""
    root = tmp_path_factory.mktemp("world")
    for name, split, n in SPLITS:
        write_dataset(root / name, name, n=n, seed=1, split=split, config=WORLD)
    write_dataset(root / "jsonl", "jsonl", n=4, seed=2, split="train", config=WORLD)
    write_dataset(root / "jsonl-stills", "jsonl", n=4, seed=3, split="train", config=WORLD, stills=True)
    write_dataset(root / "jsonl-motion", "jsonl", n=6, seed=11, split="train", config=WORLD, motion_stills=True)
    return root


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """The built-in tiny CLIP + tokenizer, written once and shared (runs pass model.clip=<this>)."""
    from training.tiny_backbone import write_tiny_backbone

    return write_tiny_backbone(tmp_path_factory.mktemp("tiny-clip"))


def tiny_args(world: Path, backbone: Path, out: Path, *extra: str) -> list[str]:
    """argv for `training.train.main`: the shipped tiny config on the synthetic MSR-VTT, 2 steps."""
    return ["--config", str(TINY), f"model.clip={backbone}", f"data.root={world / 'msrvtt'}",
            f"run.output_dir={out}", "schedule.steps=2", "run.progress=false", *extra]
