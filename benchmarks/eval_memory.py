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
resident set just before scoring; on CUDA it is torch.cuda.max_memory_allocated growth. Naive
variants cannot run at 1,000 x 1,000 in 24 GiB, so they run at sizes that fit and their bytes per
pair are extrapolated. Target: chunked 1,000 x 1,000 under 1 GiB.

    python benchmarks/eval_memory.py [--n-full 1000] [--chunk 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("literal", "one-shot", "chunked")
MIB = 2**20
TARGET_BYTES = 2**30  # the bound for chunked 1,000 x 1,000 scoring


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


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"{key} not in /proc/self/status; CPU peak memory needs Linux")


def measure(variant: str, n: int, chunk: int, n_tokens: int, n_frames: int, width: int, device: str) -> dict:
    """Score n x n pairs with one variant in this process; return its peak memory growth and wall time."""
    import torch

    from stanchat.mug import mug_similarity

    text, mask, video = make_inputs(n, n, n_tokens, n_frames, width, device)
    score = {
        "literal": lambda: literal_mug(text, mask, video),
        "one-shot": lambda: mug_similarity(text, mask, video),
        "chunked": lambda: mug_similarity(text, mask, video, chunk_size=chunk),
    }[variant]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) to the current RSS
        before = _proc_status_bytes("VmRSS")
    start = time.perf_counter()
    with torch.inference_mode():
        scores = score()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _proc_status_bytes("VmHWM")
    wall = time.perf_counter() - start
    del scores
    return {"variant": variant, "n": n, "chunk": chunk, "peak_bytes": peak - before, "wall_s": wall}


def _measure_in_subprocess(variant: str, n: int, args: argparse.Namespace) -> dict:
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-full", type=int, default=1000, help="texts = videos for the chunked run")
    parser.add_argument("--n-literal", default="50,100", help="sizes for the literal variant")
    parser.add_argument("--n-one-shot", default="100,200", help="sizes for the one-shot variant")
    parser.add_argument("--chunk", type=int, default=128, help="chunk_size for the chunked variant")
    parser.add_argument("--tokens", type=int, default=32, help="N, text tokens")
    parser.add_argument("--frames", type=int, default=12, help="T, frames per video")
    parser.add_argument("--width", type=int, default=768, help="P, feature width")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--measure", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one run, JSON out
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    return parser


def _report(rows: list[dict], n_full: int) -> None:
    print(f"{'variant':<9} {'texts x videos':>15} {'peak MiB':>10} {'bytes/pair':>11} {'wall s':>8}")
    for row in rows:
        pairs = row["n"] ** 2
        print(f"{row['variant']:<9} {row['n']:>7} x {row['n']:<5} {row['peak_bytes'] / MIB:>10.1f} "
              f"{row['peak_bytes'] / pairs:>11.0f} {row['wall_s']:>8.2f}")
    for variant in ("literal", "one-shot"):
        runs = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["n"])[-2:]
        if len(runs) == 2:  # the slope between two sizes cancels the fixed overhead of a first call
            small, large = runs
            per_pair = (large["peak_bytes"] - small["peak_bytes"]) / (large["n"] ** 2 - small["n"] ** 2)
            print(f"{variant} grows {per_pair / 1024:.1f} KiB per extra pair -> "
                  f"~{per_pair * n_full**2 / 2**30:.0f} GiB at {n_full} x {n_full} (extrapolated)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.n, args.chunk, args.tokens, args.frames, args.width, args.device)))
        return 0
    print(f"all-pairs Mug (full mode), T={args.frames} N={args.tokens} P={args.width}, device={args.device}")
    print(f"literal / one-shot / chunked agree to {agreement(args):.1e} (max |diff|, 16 x 16 pairs)")
    sizes = {"literal": args.n_literal, "one-shot": args.n_one_shot}
    plan = [(variant, int(n)) for variant, text in sizes.items() for n in text.split(",") if n]
    plan += [("chunked", n) for n in sorted({*(n for _, n in plan), args.n_full})]
    rows = [_measure_in_subprocess(variant, n, args) for variant, n in plan]
    _report(rows, args.n_full)
    full = next(r for r in rows if r["variant"] == "chunked" and r["n"] == args.n_full)
    verdict = "meets" if full["peak_bytes"] < TARGET_BYTES else "MISSES"
    print(f"chunked {args.n_full} x {args.n_full} (chunk_size={args.chunk}): peak {full['peak_bytes'] / MIB:.0f} MiB, "
          f"{full['wall_s']:.1f} s; target < {TARGET_BYTES / MIB:.0f} MiB: {verdict}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's stanchat, not an installed one
    sys.exit(main())
