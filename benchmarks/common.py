"""Timing, memory and command-line helpers every benchmark shares (the only copy of each).

Timing: variants are timed in turns (A B C A B C ...) after a warm-up round and compared by their
medians, so load that drifts during a run (the machines are shared) slows every variant alike.
Memory: growth over a mark, from `torch.cuda.max_memory_allocated` on a GPU and from the process's
peak resident set (Linux VmHWM, which can be reset) on the CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from benchmarks.results import Result

MIB, GIB = 2**20, 2**30


def sync(device) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so wall-clock times are honest."""
    if device is not None and getattr(device, "type", device) == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device=None) -> float:
    """Seconds one call of `fn` takes, the GPU waited for on both ends."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, device=None,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of `repeats` calls of each function, taking turns; `warmup` rounds are not counted."""
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            elapsed = timed(fn, device)
            if round_ >= warmup:
                seconds[name].append(elapsed)
    return seconds


def medians(seconds: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in seconds.items()}


def proc_bytes(key: str, path: str = "/proc/self/status") -> int:
    """A memory line of /proc/self/status (VmRSS, VmHWM) or /proc/meminfo (MemTotal, MemAvailable)
    in bytes; Linux only."""
    with open(path) as lines:
        for line in lines:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"{key} not in {path}")


def peak_rss_bytes() -> int:
    """This process's peak resident memory. Linux: VmHWM (exec resets it; ru_maxrss would start from
    the parent's peak at fork time); elsewhere ru_maxrss (bytes on macOS, KiB on others)."""
    if os.path.exists("/proc/self/status"):
        return proc_bytes("VmHWM")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory:
    """Peak memory growth over a mark: by default the memory in use when it was made.

    `restart()` starts a new peak (the mark stays); `peak()` is the peak since then minus the mark.
    CUDA: allocated tensor memory (`torch.cuda.max_memory_allocated`; the CUDA context and the
    allocator's cache are not counted). CPU: resident memory of the whole process (Linux only).
    """

    def __init__(self, device, mark: int | None = None):
        self.cuda = getattr(device, "type", device) == "cuda"
        self.mark = self.current() if mark is None else mark
        self.restart()

    def current(self) -> int:
        """Bytes in use now."""
        if self.cuda:
            import torch

            return torch.cuda.memory_allocated()
        if not os.path.exists("/proc/self/clear_refs"):
            raise RuntimeError("CPU peak memory needs Linux (/proc/self/clear_refs)")
        return proc_bytes("VmRSS")

    def restart(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM (peak RSS) to the current RSS

    def peak(self) -> int:
        """Bytes: the peak since the last restart, minus the mark."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.mark
        return proc_bytes("VmHWM") - self.mark


def load_average() -> float | None:
    """The 1-minute load average (None where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def cpu_name(threads: int | None = None) -> str:
    """"CPU (N threads)" for a figure's device column."""
    return f"CPU ({threads or os.cpu_count()} threads)"


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of `doc`, with `--json PATH`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results (figures, targets, raw data) as JSON")
    return parser


def run(parser: argparse.ArgumentParser, measure: Callable[[argparse.Namespace], Result],
        report: Callable[[Result], None], argv: list[str] | None) -> int:
    """Every benchmark's `main`: parse, measure, print, and write the JSON when asked."""
    args = parser.parse_args(argv)
    result = measure(args)
    report(result)
    if args.json:
        result.save(Path(args.json))
    return 0
