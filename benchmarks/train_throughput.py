"""Training throughput: clips/s and peak memory of one training step of a small Mug-STAN, with and
without gradient checkpointing, and with CLIP trained versus frozen (STAN only); and the data loader
alone, loose files versus WebDataset shards with 0, 1 and 2 workers (`benchmarks/loader.py`), so the
page shows whether the loader or the model is the bottleneck. All in one run.

    python benchmarks/train_throughput.py [--steps 6] [--frames 8] [--batch 8] [--device cpu] [--no-loader]

Each variant runs in its own child process so that its peak memory is its own: the growth of peak
memory over what the built model holds (optimizer state, gradients, activations); on a GPU from
`torch.cuda.max_memory_allocated`, on CPU from the process's peak resident memory. The variants step
in turn (round-robin) and clips/s comes from the median step time, so a machine shared with other
work slows all variants alike. Inputs are random
tensors already in memory, so decoding is not measured; the step is the training task's own
loss (`training.tasks.ContrastiveTask`) with AdamW over the training param groups.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: its stanchat and benchmarks

from benchmarks.common import MIB, PeakMemory, cpu_name, parser, run, sync  # noqa: E402
from benchmarks.loader import WORKERS, add_arguments, measure_loaders  # noqa: E402
from benchmarks.results import Figure, Result  # noqa: E402

VARIANTS = (  # (name, gradient checkpointing, freeze CLIP)
    ("full", False, False),
    ("full + ckpt", True, False),
    ("stan only", False, True),
    ("stan only + ckpt", True, True),
)


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=6, help="timed steps per variant (after 2 warm-up steps)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", type=int, default=256, help="CLIP width (heads = width / 64)")
    p.add_argument("--layers", type=int, default=6, help="CLIP vision and text layers")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--no-loader", action="store_true", help="time the training step only, not the data loader")
    add_arguments(p)
    return p


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def small_model(args: argparse.Namespace):
    """A random CLIP of the requested size with a 4-layer STAN (ViT-B/16 shapes, scaled down)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from stanchat.stan import STANConfig
    from stanchat.videoclip import VideoCLIP

    torch.manual_seed(0)
    common = dict(hidden_size=args.width, intermediate_size=4 * args.width, num_hidden_layers=args.layers,
                  num_attention_heads=max(1, args.width // 64), projection_dim=args.width)
    text = dict(common, vocab_size=1000, max_position_embeddings=32, bos_token_id=0, pad_token_id=1, eos_token_id=999)
    config = CLIPConfig(text_config=text,
                        vision_config=dict(common, image_size=args.image_size, patch_size=16),
                        projection_dim=args.width)
    return VideoCLIP.from_clip(CLIPModel(config), STANConfig(depth=min(4, args.layers)))


def setup(args: argparse.Namespace, checkpointing: bool, freeze: bool):
    """Build one variant and return its `step()` closure, trainable parameter count and device."""
    import torch

    from training.config import OptimConfig
    from training.model import set_trainable
    from training.optim import build_optimizer
    from training.tasks import ContrastiveTask, VideoTextForward

    device = torch.device(args.device)
    model = small_model(args)
    set_trainable(model, freeze_clip=freeze, freeze_text=False)
    model.set_gradient_checkpointing(checkpointing)
    model.to(device).train()
    forward, task = VideoTextForward(model), ContrastiveTask(model, "mean")
    optimizer = build_optimizer(model, OptimConfig())
    gen = torch.Generator().manual_seed(0)
    size = args.image_size
    batch = {"pixel_values": torch.randn(args.batch, args.frames, 3, size, size, generator=gen).to(device),
             "input_ids": torch.randint(4, 998, (args.batch, 32), generator=gen).to(device),
             "attention_mask": torch.ones(args.batch, 32, dtype=torch.long, device=device)}
    batch["input_ids"][:, -1] = 999  # EOS ends each caption: HF CLIP pools there

    def step() -> float:
        start = time.perf_counter()
        task.loss(forward, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        return time.perf_counter() - start

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return step, trainable, device


def _child(args, checkpointing: bool, freeze: bool, pipe) -> None:
    """One variant in its own process: warm up, then one timed step per "step" message; "done"
    returns the peak memory growth over what the built model and its inputs hold."""
    step, trainable, device = setup(args, checkpointing, freeze)
    memory = PeakMemory(device)
    for _ in range(2):  # warm-up: allocator, optimizer state
        step()
    pipe.send(trainable)
    while pipe.recv() == "step":
        pipe.send(step())
    pipe.send(memory.peak())


def measure(args: argparse.Namespace) -> Result:
    """Step times and peak memory of every variant, each in its own process, stepping in turns."""
    context = multiprocessing.get_context("spawn")  # a fresh process per variant: its own peak memory
    pipes, children = {}, []
    for name, checkpointing, freeze in VARIANTS:
        parent, child_end = context.Pipe()
        child = context.Process(target=_child, args=(args, checkpointing, freeze, child_end))
        child.start()
        pipes[name], children = parent, children + [child]
    trainable = {name: pipe.recv() for name, pipe in pipes.items()}
    times = {name: [] for name in pipes}
    for _ in range(args.steps):  # round-robin, so load from other processes hits every variant alike
        for name, pipe in pipes.items():
            pipe.send("step")
            times[name].append(pipe.recv())
    peaks = {}
    for name, pipe in pipes.items():
        pipe.send("done")
        peaks[name] = pipe.recv() / MIB
    for child in children:
        child.join()
    loader = {} if args.no_loader else measure_loaders(args)
    return _result(args, trainable, times, peaks, loader)


def _result(args: argparse.Namespace, trainable: dict, times: dict, peaks: dict, loader: dict) -> Result:
    """Checkpointing's cost in speed and its saving in memory, for full training and STAN only; the
    loader's clips/s from shards against loose files, and against the model's step."""
    rate = {name: args.batch / statistics.median(t) for name, t in times.items()}
    device = args.device if args.device.startswith("cuda") else cpu_name()
    result = Result("train_throughput", "Training throughput (one Mug-STAN training step)",
                    data={"trainable": trainable, "times": times, "peaks": peaks, "args": vars(args), "loader": loader},
                    setup=f"random CLIP width {args.width}, {args.layers} layers, {args.image_size} px, STAN K = 4, "
                          f"{args.frames} frames, batch {args.batch}, AdamW, on {device}; median of {args.steps} "
                          f"steps per variant, variants stepping in turns")
    for name in ("full", "stan only"):
        ckpt = f"{name} + ckpt"
        result.figures.append(Figure(f"{name}: clips/s with / without checkpointing", rate[ckpt] / rate[name], "x",
                                     detail=f"{rate[ckpt]:.2f} vs {rate[name]:.2f} clips/s"))
        result.figures.append(Figure(f"{name}: peak memory with / without checkpointing", peaks[ckpt] / peaks[name],
                                     "x", detail=f"{peaks[ckpt]:.0f} MiB vs {peaks[name]:.0f} MiB over the built model"))
    result.figures.append(Figure("stan only / full clips/s", rate["stan only"] / rate["full"], "x",
                                 detail=f"{rate['stan only']:.2f} vs {rate['full']:.2f} clips/s"))
    result.notes.append("Peak memory is the growth over the built model and its inputs (optimizer state, gradients, "
                        "activations): CPU resident memory here, torch's allocated memory on a GPU.")
    if loader:
        _loader_figures(args, result, loader, rate["full"])
    return result


def _loader_figures(args: argparse.Namespace, result: Result, loader: dict, model_rate: float) -> None:
    for workers in WORKERS:
        shards, loose = loader[f"shards w{workers}"], loader[f"loose w{workers}"]
        result.figures.append(Figure(f"loader clips/s, shards / loose files, {workers} workers", shards / loose, "x",
                                     detail=f"{shards:.1f} vs {loose:.1f} clips/s"))
    best = max(loader, key=loader.get)
    result.figures.append(Figure("fastest loader / full training step, clips/s", loader[best] / model_rate, "x",
                                 detail=f"{best}: {loader[best]:.1f} vs {model_rate:.2f} clips/s; above 1 the model "
                                        "is the bottleneck, below 1 the loader"))
    result.notes.append(f"Loader: {args.loader_clips} synthetic clips of {args.clip_size} px x {args.clip_frames} frames "
                        f"(mp4), decoded to {args.frames} frames at {args.image_size} px, augmented and tokenised as "
                        f"training does, batches of {args.batch}; loose = jsonl + files, shards = tar shards of 8 "
                        f"clips; median of {args.loader_rounds} epochs per loader, loaders in turns, clips/s after "
                        "each epoch's first batch.")


def report(result: Result) -> None:
    """Print clips/s (from the median step time) and peak memory, with ratios to "full"."""
    data, args = result.data, result.data["args"]
    rate = {name: args["batch"] / statistics.median(t) for name, t in data["times"].items()}
    peaks = data["peaks"]
    memory = "peak MB over setup" + ("" if args["device"].startswith("cuda") else " (RSS)")
    print(f"train throughput: {result.setup}")
    print(f"{'variant':<18} {'trainable M':>11} {'clips/s':>8} {'x full':>7} {memory:>25} {'x full':>7}")
    for name in data["times"]:
        print(f"{name:<18} {data['trainable'][name] / 1e6:>11.2f} {rate[name]:>8.2f} {rate[name] / rate['full']:>7.2f} "
              f"{peaks[name]:>25.1f} {peaks[name] / peaks['full']:>7.2f}")
    if data.get("loader"):
        print("data loader alone, clips/s: " + ", ".join(f"{name} {value:.1f}" for name, value in data["loader"].items()))
    result.print_figures()


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), measure, report, argv)


if __name__ == "__main__":
    sys.exit(main())
