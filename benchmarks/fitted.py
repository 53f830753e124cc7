"""`stanchat ask`'s decode + preprocess: frames fitted in the decode worker vs full-size frames.

Part of benchmarks/decode.py (its rows "ask decode + preprocess ..."). Two paths, each decoding a
clip and preprocessing it as `stanchat ask` does (torch loaded, a LLaVA-1.5 preprocessor: 336 px
shorter side, 336 px crop):
- "full": today's path before the fit: `load_video` returns display-size frames from the worker
  (pickled through the pipe) and the main process resizes and crops them;
- "fitted": `load_video(..., fit=preprocessor.fit)`: the worker fits each frame as it decodes it
  and (T, 336, 336, 3) comes back; the main process only normalises.
Speed: both paths in one process, taking turns after a warm-up round (the worker started), medians.
First call and memory: each path alone in a fresh interpreter, one call that starts the worker
(Python, PyAV, and for the fit torch: the worst case, as `stanchat ask` starts its worker while the
model loads, `watchdog.prestart`). Peak RSS is VmHWM of the main process and of its decode worker,
read by the main process before it exits (the worker's includes torch's shared library pages, which
the main process maps too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import MIB, interleaved, medians, peak_rss_bytes, proc_bytes
from benchmarks.results import Figure, Result, Target

ASK_SIZE = 336  # LLaVA-1.5's image processor: shortest_edge 336, crop 336 (the default preset)
SPEEDUP_TARGET = Target(">=", 1.5)  # issue 22: fitted in the worker at least 1.5x faster at 16 frames of 1080p
MEMORY_TARGET = Target("<=", 200.0)  # issue 22: at 64 frames, a 1080p clip peaks within 200 MB of a 240p clip
PATHS = ("full", "fitted")
CASES = (*PATHS, "speed")  # a path alone in a fresh process (first call, memory), or both taking turns


def measure_here(case: str, path: str, frames: int, repeat: int) -> dict:
    """In this (fresh) process: one path's first call and the peak RSS of this process and of its
    decode worker (MiB), or ("speed") both paths' seconds over `repeat` turns after a warm-up."""
    import torch  # noqa: F401  (loaded before the baseline: `stanchat ask` has it before it decodes)

    from stanchat.video import Preprocessor, load_video

    pre = Preprocessor(size=ASK_SIZE, crop_size=ASK_SIZE)

    def ask(fit) -> None:
        pixels = pre(load_video(path, frames, fit=fit))  # (1, T, 3, 336, 336) float32
        assert pixels.shape == (1, frames, 3, ASK_SIZE, ASK_SIZE)

    if case == "speed":
        return interleaved({"full": lambda: ask(None), "fitted": lambda: ask(pre.fit)}, repeat)
    baseline = peak_rss_bytes() / MIB
    started = time.perf_counter()
    ask(pre.fit if case == "fitted" else None)
    seconds = time.perf_counter() - started
    workers = _children()
    assert len(workers) == 1, f"expected one decode worker, found {workers}"
    worker = proc_bytes("VmHWM", f"/proc/{workers[0]}/status") / MIB
    return {"seconds": seconds, "main_mib": peak_rss_bytes() / MIB, "main_baseline_mib": baseline, "worker_mib": worker}


def _children() -> list[int]:
    """Pids of this process's children (Linux: /proc/self/task/*/children)."""
    pids = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            pids += [int(pid) for pid in f.read().split()]
    return pids


def measure_case(script: str, case: str, path: Path, frames: int, repeat: int) -> dict:
    """`measure_here` in a fresh interpreter started from `script` (its --measure-fit entry)."""
    argv = [sys.executable, script, "--measure-fit", case, "--video", str(path), "--frames", str(frames),
            "--repeat", str(repeat)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def measure_all(script: str, hd: Path, small: Path, frames: int, memory_frames: int, repeat: int) -> dict:
    """Both paths on the 1080p clip at `frames`; at `memory_frames` the fitted path on both clips and
    today's on the 1080p one."""
    return {
        "speed": measure_case(script, "speed", hd, frames, repeat),
        "first": {case: measure_case(script, case, hd, frames, 1) for case in PATHS},
        "memory": {name: measure_case(script, case, video, memory_frames, 1) for name, case, video in
                   (("1080p", "fitted", hd), ("240p", "fitted", small), ("1080p-full", "full", hd))},
    }


def total(run: dict) -> float:
    """Peak RSS of the main process plus its worker, MiB (each at its own peak: an upper bound)."""
    return run["main_mib"] + run["worker_mib"]


def add_figures(result: Result, data: dict, frames: int, memory_frames: int) -> None:
    """The rows: speed-up warm and first call, peak memory both ways, 1080p against 240p at many frames."""
    warm = medians(data["speed"])
    result.figures.append(Figure(
        f"ask decode + preprocess, {frames} frames of 1080p: full-size / fitted time (warm worker)",
        warm["full"] / warm["fitted"], "x", SPEEDUP_TARGET, detail=f"{warm['full']:.3f} s vs {warm['fitted']:.3f} s "
        f"wall, medians of {len(data['speed']['full'])} turns"))
    full, fitted = data["first"]["full"], data["first"]["fitted"]
    first_full, first_fit = full["seconds"], fitted["seconds"]
    result.figures.append(Figure(
        f"ask decode + preprocess, {frames} frames of 1080p: full-size / fitted time (first call, starts the worker)",
        first_full / first_fit, "x", detail=f"{first_full:.2f} s vs {first_fit:.2f} s; the fitted worker imports torch "
        "too, which `stanchat ask` overlaps with loading the model"))
    result.figures.append(Figure(
        f"ask decode + preprocess, {frames} frames of 1080p: full-size / fitted peak RSS (main + worker)",
        total(full) / total(fitted), "x", detail=f"{total(full):.0f} MiB ({full['main_mib']:.0f} main + "
        f"{full['worker_mib']:.0f} worker) vs {total(fitted):.0f} MiB ({fitted['main_mib']:.0f} + "
        f"{fitted['worker_mib']:.0f}); the main process holds {full['main_baseline_mib']:.0f} MiB before decoding"))
    hd, small = data["memory"]["1080p"], data["memory"]["240p"]
    result.figures.append(Figure(
        f"fitted, {memory_frames} frames: peak RSS of a 1080p clip minus a 426x240 clip (main + worker)",
        total(hd) - total(small), "MiB", MEMORY_TARGET, detail=f"{total(hd):.0f} MiB ({hd['main_mib']:.0f} main + "
        f"{hd['worker_mib']:.0f} worker) vs {total(small):.0f} MiB ({small['main_mib']:.0f} + "
        f"{small['worker_mib']:.0f})"))
    today = data["memory"]["1080p-full"]
    result.figures.append(Figure(
        f"ask decode + preprocess, {memory_frames} frames of 1080p: full-size / fitted peak RSS (main + worker)",
        total(today) / total(hd), "x", detail=f"{total(today):.0f} MiB ({today['main_mib']:.0f} main + "
        f"{today['worker_mib']:.0f} worker) vs {total(hd):.0f} MiB"))
