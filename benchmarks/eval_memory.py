"""Peak memory of all-pairs Mug scoring: chunked versus naive.

Retrieval evaluation scores every text against every video (1,000 x 1,000 for MSR-VTT 1k-A) with
T = 12 frames, N = 32 tokens and P = 768 (ViT-L/14). Three ways to do it, in full mode:

  literal   the equations as written (and as the released code does it): per-pair c_bar (T, P),
            v_bar (N, P), v~ and c~ for all pairs at once, O(N_text * N_video * (N + T) * P) memory.
  one-shot  `mug_similarity(..., chunk_size=None)`: works on the (N, T) dot products per pair only,
            O(N_text * N_video * N * T) memory.
  chunked   `mug_similarity(..., chunk_size=C)`: the same in C x C blocks, O(C^2 * N * T) memory.

Each measurement runs in a fresh subprocess so that one variant's peak cannot hide another's. On CPU
the peak is the growth of the process's peak resident set (VmHWM, reset before scoring) over its
resident set just before scoring; on CUDA it is torch.cuda.max_memory_allocated growth. The literal
variant cannot run at 1,000 x 1,000 in 24 GiB: it runs at sizes that fit and its bytes per pair are
extrapolated (and labelled so). One-shot runs at 1,000 x 1,000 too when its extrapolated peak fits
comfortably in the memory available now; otherwise it is extrapolated the same way.
Target: chunked 1,000 x 1,000 under 1 GiB.

    python benchmarks/eval_memory.py [--n-full 1000] [--chunk 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: its stanchat and benchmarks

from benchmarks.common import MIB, PeakMemory, parser, proc_bytes, run, timed  # noqa: E402
from benchmarks.results import Figure, Result, Target  # noqa: E402

VARIANTS = ("literal", "one-shot", "chunked")
TARGET = Target("<", 1024.0)  # MiB: the bound for chunked 1,000 x 1,000 scoring
HEADROOM = 1.5  # run one-shot at full size only if 1.5 x its extrapolated peak is available now


def literal_mug(text, mask, video, tau: float = 100.0):
    """Full-mode Mug (Eq. 11-18) forming every per-pair vector, as the equations read. (Nt, Nv)."""
    import torch
    import torch.nn.functional as F

    mask = mask.bool()
    c = F.normalize(torch.where(mask[..., None], text.float(), 0.0), dim=-1)  # (Nt, N, P)
    v = F.normalize(video.float(), dim=-1)  # (Nv, T, P)
    dots = torch.einsum("xnp,ytp->xynt", c, v)  # (Nt, Nv, N, T): c_j . v_i
    padding = ~mask[:, None, :]  # (Nt, 1, N)
    s = torch.softmax((tau * dots).masked_fill(padding[..., None], float("-inf")), dim=2)  # Eq. 11
    c_bar = torch.einsum("xynt,xnp->xytp", s, c)  # (Nt, Nv, T, P), Eq. 12
    s_tilde = torch.softmax(tau * torch.einsum("xytp,ytp->xyt", c_bar, v), dim=2)  # Eq. 13
    v_tilde = torch.einsum("xyt,ytp->xyp", s_tilde, v)  # (Nt, Nv, P), Eq. 14
    s_prime = torch.softmax(tau * dots, dim=3)  # Eq. 15
    v_bar = torch.einsum("xynt,ytp->xynp", s_prime, v)  # (Nt, Nv, N, P), Eq. 16
    token_logits = (tau * torch.einsum("xynp,xnp->xyn", v_bar, c)).masked_fill(padding, float("-inf"))
    c_tilde = torch.einsum("xyn,xnp->xyp", torch.softmax(token_logits, dim=2), c)  # (Nt, Nv, P), Eq. 17
    return (v_tilde * c_tilde).sum(dim=-1)  # Eq. 18


def make_inputs(n_text: int, n_video: int, n_tokens: int, n_frames: int, width: int, device: str, seed: int = 0):
    """Random features and a mask with text lengths 4..N, built straight on `device` (no temporaries)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    text = torch.randn(n_text, n_tokens, width, generator=gen, device=device)
    video = torch.randn(n_video, n_frames, width, generator=gen, device=device)
    lengths = torch.randint(4, n_tokens + 1, (n_text,), generator=gen, device=device)
    mask = torch.arange(n_tokens, device=device)[None] < lengths[:, None]  # (Nt, N)
    return text, mask, video


def measure_variant(variant: str, n: int, chunk: int, n_tokens: int, n_frames: int, width: int, device: str) -> dict:
    """Score n x n pairs with one variant in this process; return its peak memory growth and wall time."""
    import torch

    from stanchat.mug import mug_similarity

    text, mask, video = make_inputs(n, n, n_tokens, n_frames, width, device)
    score = {
        "literal": lambda: literal_mug(text, mask, video),
        "one-shot": lambda: mug_similarity(text, mask, video),
        "chunked": lambda: mug_similarity(text, mask, video, chunk_size=chunk),
    }[variant]
    memory = PeakMemory(torch.device(device))
    with torch.inference_mode():
        wall = timed(score, torch.device(device))
    return {"variant": variant, "n": n, "chunk": chunk, "peak_bytes": memory.peak(), "wall_s": wall}


def _measure_in_subprocess(variant: str, n: int, args: argparse.Namespace) -> dict:
    """`measure_variant` in a fresh interpreter, so no earlier run's peak hides this one's."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", variant, "--n", str(n),
           "--chunk", str(args.chunk), "--tokens", str(args.tokens), "--frames", str(args.frames),
           "--width", str(args.width), "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"measuring {variant} at {n} x {n} failed:\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(args: argparse.Namespace, n: int = 16) -> float:
    """Largest |difference| between the literal, one-shot and chunked scores on n x n pairs."""
    import torch

    from stanchat.mug import mug_similarity

    text, mask, video = make_inputs(n, n, args.tokens, args.frames, args.width, args.device, seed=1)
    with torch.inference_mode():
        reference = literal_mug(text, mask, video)
        others = [mug_similarity(text, mask, video), mug_similarity(text, mask, video, chunk_size=5)]
    return max(float((other - reference).abs().max()) for other in others)


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--n-full", type=int, default=1000, help="texts = videos for the chunked run")
    p.add_argument("--n-literal", default="50,100", help="sizes for the literal variant")
    p.add_argument("--n-one-shot", default="100,200", help="sizes for the one-shot variant (then --n-full if it fits)")
    p.add_argument("--no-one-shot-full", action="store_true", help="extrapolate one-shot at --n-full, never run it")
    p.add_argument("--chunk", type=int, default=128, help="chunk_size for the chunked variant")
    p.add_argument("--tokens", type=int, default=32, help="N, text tokens")
    p.add_argument("--frames", type=int, default=12, help="T, frames per video")
    p.add_argument("--width", type=int, default=768, help="P, feature width")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--measure", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one run, JSON out
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    return p


def slope(rows: list[dict], variant: str) -> float | None:
    """Bytes per extra pair between the two largest runs of `variant` (the slope cancels the fixed
    overhead of a first call); None with fewer than two runs."""
    runs = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["n"])[-2:]
    if len(runs) < 2:
        return None
    small, large = runs
    return (large["peak_bytes"] - small["peak_bytes"]) / (large["n"] ** 2 - small["n"] ** 2)


def at_full(rows: list[dict], variant: str, n_full: int) -> tuple[float | None, bool]:
    """(peak bytes of `variant` at n_full x n_full, measured?): the run if there is one, else the
    largest run plus the slope (None when it cannot be extrapolated)."""
    runs = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["n"])
    if runs and runs[-1]["n"] == n_full:
        return runs[-1]["peak_bytes"], True
    per_pair = slope(rows, variant)
    if per_pair is None:
        return None, False
    return runs[-1]["peak_bytes"] + per_pair * (n_full**2 - runs[-1]["n"] ** 2), False


def measure(args: argparse.Namespace) -> Result:
    """Peaks of the three variants (each in a fresh process), the ratios to chunked at full size."""
    agree = agreement(args)
    sizes = {"literal": args.n_literal, "one-shot": args.n_one_shot}
    plan = [(variant, int(n)) for variant, text in sizes.items() for n in text.split(",") if n]
    rows = [_measure_in_subprocess(variant, n, args) for variant, n in plan]
    predicted, _ = at_full(rows, "one-shot", args.n_full)
    available = proc_bytes("MemAvailable", "/proc/meminfo") if args.device == "cpu" else None
    if not args.no_one_shot_full and predicted is not None and (available is None or HEADROOM * predicted < available):
        rows.append(_measure_in_subprocess("one-shot", args.n_full, args))
    for n in sorted({n for _, n in plan} | {args.n_full}):
        rows.append(_measure_in_subprocess("chunked", n, args))
    return _result(args, rows, agree)


def _result(args: argparse.Namespace, rows: list[dict], agree: float) -> Result:
    n = args.n_full
    full = next(r for r in rows if r["variant"] == "chunked" and r["n"] == n)
    chunked = full["peak_bytes"]
    result = Result("eval_memory", f"Mug scoring memory ({n} x {n} texts x videos)", data={"rows": rows, "agree": agree},
                    setup=f"full-mode Mug, T = {args.frames}, N = {args.tokens}, P = {args.width}, {args.device}; "
                          f"each variant in a fresh process; variants agree to {agree:.1e}")
    result.figures.append(Figure(f"chunked peak, {n} x {n} (chunk_size {args.chunk})", chunked / MIB, "MiB", TARGET,
                                 detail=f"{full['wall_s']:.1f} s"))
    for variant in ("one-shot", "literal"):
        peak, measured = at_full(rows, variant, n)
        if peak is None:
            continue
        how = "measured" if measured else "extrapolated from the two largest runs"
        result.figures.append(Figure(f"{variant} / chunked peak, {n} x {n}" + ("" if measured else " (extrapolated)"),
                                     peak / chunked, "x", detail=f"{peak / 2**30:.2f} GiB ({how}) vs {chunked / MIB:.0f} MiB"))
        if measured:
            run_ = next(r for r in rows if r["variant"] == variant and r["n"] == n)
            result.figures.append(Figure(f"chunked / {variant} wall time, {n} x {n}", full["wall_s"] / run_["wall_s"], "x",
                                         detail=f"{full['wall_s']:.1f} s vs {run_['wall_s']:.1f} s"))
    result.notes.append("literal forms every per-pair vector as the equations read (the released code's way); "
                        "one-shot is mug_similarity without chunks; chunked is what evaluation runs.")
    return result


def report(result: Result) -> None:
    rows = result.data["rows"]
    print(f"all-pairs Mug: {result.setup}")
    print(f"{'variant':<9} {'texts x videos':>15} {'peak MiB':>10} {'bytes/pair':>11} {'wall s':>8}")
    for row in rows:
        pairs = row["n"] ** 2
        print(f"{row['variant']:<9} {row['n']:>7} x {row['n']:<5} {row['peak_bytes'] / MIB:>10.1f} "
              f"{row['peak_bytes'] / pairs:>11.0f} {row['wall_s']:>8.2f}")
    for variant in ("literal", "one-shot"):
        per_pair = slope(rows, variant)
        if per_pair is not None:
            print(f"{variant} grows {per_pair / 1024:.1f} KiB per extra pair")
    result.print_figures()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.measure:
        print(json.dumps(measure_variant(args.measure, args.n, args.chunk, args.tokens, args.frames, args.width,
                                         args.device)))
        return 0
    return run(build_parser(), measure, report, argv)


if __name__ == "__main__":
    sys.exit(main())
