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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: its stanchat and benchmarks

import torch  # noqa: E402
from transformers import CLIPVisionConfig, CLIPVisionModel  # noqa: E402

from benchmarks.common import cpu_name, interleaved, medians, parser, run  # noqa: E402
from benchmarks.results import Figure, Result, Target  # noqa: E402
from stanchat.stan import STAN, STANConfig, run_video_tower  # noqa: E402

TARGET, TARGET_FRAMES = Target("<=", 1.25), 8


def flop_ratio(layers: int, depth: int, width: int, patches: int, frames: int) -> float:
    """(CLIP + STAN) / CLIP in multiply-adds for one video (linear layers and attention scores)."""
    d, s = width, patches + 1

    def encoder_layer(tokens: int, seq: int) -> float:  # 4 D^2 attention + 8 D^2 MLP per token, QK^T and AV
        return tokens * 12 * d * d + 2 * tokens * seq * d

    clip = layers * frames * encoder_layer(s, s)
    temporal = patches * frames * 5 * d * d + 2 * patches * frames * frames * d
    return (clip + depth * (frames * encoder_layer(s, s) + temporal)) / clip


def time_tower(vision: CLIPVisionModel, stan: STAN, frames: int, repeats: int, device: torch.device,
               dtype: torch.dtype) -> dict[str, list[float]]:
    """Seconds of (CLIP alone, CLIP + STAN) for one video of `frames` frames, `repeats` each, in turns."""
    size = vision.config.image_size
    video = torch.randn(1, frames, 3, size, size, device=device, dtype=dtype)
    end = vision.config.num_hidden_layers - 1
    return interleaved({"clip": lambda: run_video_tower(vision, None, video, end),
                        "clip+stan": lambda: run_video_tower(vision, stan, video, end)}, repeats, device)


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--depth", type=int, default=4, help="STAN depth K")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    return p


def measure(args: argparse.Namespace) -> Result:
    """Median tower seconds with and without STAN at each frame count, their ratio and the FLOP floor."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = CLIPVisionConfig(
        hidden_size=args.width, intermediate_size=4 * args.width, num_hidden_layers=args.layers,
        num_attention_heads=args.width // 64, image_size=args.image_size, patch_size=14, hidden_act="quick_gelu",
    )
    torch.manual_seed(0)
    vision = CLIPVisionModel(config).to(device, dtype).eval()
    stan = STAN(STANConfig(depth=args.depth), config).to(device, dtype).eval()
    patches = (args.image_size // 14) ** 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(torch.get_num_threads())
    result = Result("stan_overhead", "STAN overhead (CLIP + STAN vs CLIP, one video)",
                    setup=f"{args.layers} layers, width {args.width}, {args.image_size} px, K = {args.depth}, "
                          f"{args.dtype} on {name}, median of {args.repeats} interleaved runs")
    with torch.inference_mode():
        for frames in args.frames:
            seconds = time_tower(vision, stan, frames, args.repeats, device, dtype)
            median = medians(seconds)
            base, both = median["clip"], median["clip+stan"]
            floor = flop_ratio(args.layers, args.depth, args.width, patches, frames)
            result.data[str(frames)] = {"seconds": seconds, "floor": floor}
            result.figures.append(Figure(
                f"CLIP+STAN / CLIP time, T = {frames}", both / base, "x",
                TARGET if frames == TARGET_FRAMES else None,
                detail=f"{both:.3f} s vs {base:.3f} s; multiply-add floor {floor:.3f}"))
    result.notes.append("The floor is the ratio of multiply-adds: STAN's K layers each cost one CLIP layer plus a "
                        "temporal block of five D x D projections per patch token.")
    return result


def report(result: Result) -> None:
    print(f"STAN overhead: {result.setup}")
    print(f"{'frames':>6}  {'CLIP s':>8}  {'CLIP+STAN s':>11}  {'ratio':>6}  {'FLOP floor':>10}  target {TARGET.text('')}")
    for frames, data in result.data.items():
        median = medians(data["seconds"])
        base, both = median["clip"], median["clip+stan"]
        ratio = both / base
        verdict = "" if int(frames) != TARGET_FRAMES else ("ok" if TARGET.met(ratio) else "MISSED")
        print(f"{frames:>6}  {base:>8.3f}  {both:>11.3f}  {ratio:>6.3f}  {data['floor']:>10.3f}  {verdict}")
    result.print_figures()


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
