"""The training data loader alone: clips/s from loose files versus WebDataset shards, with 0, 1 and
2 DataLoader workers, measured in one run (a part of `benchmarks/train_throughput.py`).

The clips are written once by the synthetic world in both layouts (the same clips: a jsonl
annotation with mp4 files, and tar shards of them), then each (layout, workers) loader built by the
training code itself (`training.data.build_loaders`, `training.stream.build_stream_loaders`) reads
one epoch, decoding, augmenting and tokenising exactly as training does. The loaders take turns
(rounds), and a loader's rate is clips over the epoch's time after its first batch (the first batch
pays for starting workers and, for shards, filling the shuffle window), median over rounds.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

LAYOUTS = ("loose", "shards")
WORKERS = (0, 1, 2)


def add_arguments(p) -> None:
    p.add_argument("--loader-clips", type=int, default=48, help="clips per loader epoch")
    p.add_argument("--loader-rounds", type=int, default=2, help="epochs per loader, taken in turns")
    p.add_argument("--clip-size", type=int, default=128, help="pixel size of the synthetic clips (square)")
    p.add_argument("--clip-frames", type=int, default=48, help="frames per synthetic clip (at 16 fps)")


def measure_loaders(args) -> dict[str, float]:
    """{"<layout> w<workers>": clips/s} for every layout and worker count."""
    from training.synthworld import WorldConfig, write_shards
    from training.tiny_backbone import write_tiny_backbone

    with tempfile.TemporaryDirectory(prefix="stanchat-loader-bench-") as tmp:
        root = Path(tmp)
        world = WorldConfig(size=args.clip_size, frames=args.clip_frames, fps=16)
        shards = write_shards(root / "data", n=args.loader_clips, seed=0, split="train", shard_size=8, config=world,
                              loose=True)
        tokenizer = _tokenizer(write_tiny_backbone(root / "clip"))
        loaders = {f"{layout} w{w}": _loader(args, layout, w, root / "data", shards.loose.parent, tokenizer)
                   for layout in LAYOUTS for w in WORKERS}
        seconds: dict[str, list[float]] = {name: [] for name in loaders}
        clips: dict[str, list[int]] = {name: [] for name in loaders}
        for _ in range(args.loader_rounds):
            for name, loader in loaders.items():
                elapsed, count = _epoch(loader)
                seconds[name].append(elapsed)
                clips[name].append(count)
    return {name: statistics.median(c / s for c, s in zip(clips[name], seconds[name])) for name in loaders}


def _tokenizer(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


def _loader(args, layout: str, workers: int, shard_root: Path, loose_root: Path, tokenizer):
    """The training loader of one layout, built the way `training.setup.build_run` builds it."""
    from training.config import load_config
    from training.data import build_loaders, read_inputs
    from training.stream import build_stream_loaders, read_stream_inputs

    dataset, root = ("webdataset", shard_root) if layout == "shards" else ("jsonl", loose_root)
    config = load_config(None, [f"data.dataset={dataset}", f"data.root={root}", f"data.frames={args.frames}",
                                f"data.batch_size={args.batch}", f"data.num_workers={workers}", "data.max_tokens=32",
                                "data.shuffle_buffer=16", "schedule.steps=1"])
    if layout == "shards":
        return build_stream_loaders(config, read_stream_inputs(config), tokenizer, args.image_size, 0, 1)
    return build_loaders(config, read_inputs(config), tokenizer, args.image_size, 0, 1)


def _epoch(loaders) -> tuple[float, int]:
    """Seconds and clips of one epoch after its first batch."""
    if loaders.stream is not None:
        loaders.stream.start(0, loaders.stream_state)
    else:
        loaders.sampler.set_position(0, 0)
    batches = iter(loaders.train)
    next(batches)
    start, count = time.perf_counter(), 0
    for batch in batches:
        count += batch["size"]
    elapsed = time.perf_counter() - start
    del batches
    return elapsed, count
