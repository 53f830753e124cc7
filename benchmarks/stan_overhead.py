"""Time of CLIP + STAN versus CLIP alone on a CLIP-L/14-shaped random tower, measured in one run.

    python benchmarks/stan_overhead.py                 # 24 layers, width 1024, 224 px, T = 8 and 16
    python benchmarks/stan_overhead.py --device cuda --dtype bfloat16

Speed does not depend on weight values, so the tower is random. The two variants are timed in
alternation (A B A B ...) and the median of each is compared, so drift on a noisy machine hits
both alike. Target: ratio at most 1.25 at T = 8. The printed floor counts multiply-adds: each STAN
layer is one CLIP layer (spatial) plus a temporal block of five D x D projections per patch token
(q, k, v, out_proj, temporal_fc), so K = 4 on 24 layers costs ~1.23, not 1 + 4/24.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from stanchat.stan import STAN, STANConfig, run_video_tower

TARGET = 1.25


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def flop_ratio(layers: int, depth: int, width: int, patches: int, frames: int) -> float:
    """(CLIP + STAN) / CLIP in multiply-adds for one video (linear layers and attention scores)."""
    d, s = width, patches + 1

    def encoder_layer(tokens: int, seq: int) -> float:  # 4 D^2 attention + 8 D^2 MLP per token, QK^T and AV
        return tokens * 12 * d * d + 2 * tokens * seq * d

    clip = layers * frames * encoder_layer(s, s)
    temporal = patches * frames * 5 * d * d + 2 * patches * frames * frames * d
    return (clip + depth * (frames * encoder_layer(s, s) + temporal)) / clip


def measure(vision: CLIPVisionModel, stan: STAN, frames: int, repeats: int, device: torch.device,
            dtype: torch.dtype) -> tuple[float, float]:
    """Median seconds of (CLIP alone, CLIP + STAN) for one video of `frames` frames."""
    size = vision.config.image_size
    video = torch.randn(1, frames, 3, size, size, device=device, dtype=dtype)
    end = vision.config.num_hidden_layers - 1
    clip_only = lambda: run_video_tower(vision, None, video, end)  # noqa: E731
    with_stan = lambda: run_video_tower(vision, stan, video, end)  # noqa: E731
    clip_only(), with_stan()  # warm-up
    base, both = [], []
    for _ in range(repeats):
        base.append(_time(clip_only, device))
        both.append(_time(with_stan, device))
    return statistics.median(base), statistics.median(both)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--depth", type=int, default=4, help="STAN depth K")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args(argv)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = CLIPVisionConfig(
        hidden_size=args.width, intermediate_size=4 * args.width, num_hidden_layers=args.layers,
        num_attention_heads=args.width // 64, image_size=args.image_size, patch_size=14, hidden_act="quick_gelu",
    )
    torch.manual_seed(0)
    vision = CLIPVisionModel(config).to(device, dtype).eval()
    stan = STAN(STANConfig(depth=args.depth), config).to(device, dtype).eval()
    patches = (args.image_size // 14) ** 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"STAN overhead: {args.layers} layers, width {args.width}, {args.image_size} px, K={args.depth}, "
          f"{args.dtype} on {name}")
    print(f"{'frames':>6}  {'CLIP s':>8}  {'CLIP+STAN s':>11}  {'ratio':>6}  {'FLOP floor':>10}  target <= {TARGET}")
    with torch.inference_mode():
        for frames in args.frames:
            base, both = measure(vision, stan, frames, args.repeats, device, dtype)
            ratio = both / base
            verdict = "ok" if ratio <= TARGET else "MISSED"
            floor = flop_ratio(args.layers, args.depth, args.width, patches, frames)
            print(f"{frames:>6}  {base:>8.3f}  {both:>11.3f}  {ratio:>6.3f}  {floor:>10.3f}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
