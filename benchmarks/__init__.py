"""stanchat's speed and memory benchmarks, and the suite that runs them all.

Each `benchmarks/<name>.py` is a script with `measure(args) -> Result` (the figures as data: see
`benchmarks.results`) and `main(argv) -> int`, which prints them. `python -m benchmarks` (or
`make bench`) runs every benchmark below in its own process with the arguments listed here and
writes docs/PERFORMANCE.md (`benchmarks.runner`). Importing this package is cheap (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script and the arguments the suite runs it with."""

    name: str  # its module: benchmarks/<name>.py
    full: tuple[str, ...]  # arguments for the results page (sizes picked for ~20 minutes on 2 CPU cores)
    quick: tuple[str, ...]  # arguments under --quick: smaller sizes, minutes in all
    gpu: bool = False  # needs CUDA: skipped, and the page says so, where there is none


# in the order of the results page
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("stan_overhead", ("--frames", "8", "--repeats", "3"),
              ("--frames", "8", "--repeats", "1", "--layers", "6")),
    Benchmark("prefill", ("--frames", "8", "--repeats", "3"),
              ("--frames", "8", "--repeats", "1", "--layers", "2", "--width", "512")),
    Benchmark("decode", (), ("--seconds", "60", "--repeat", "2")),
    Benchmark("eval_memory", (), ("--n-full", "300", "--n-literal", "20,40", "--n-one-shot", "50,100")),
    Benchmark("train_throughput", (), ("--steps", "2", "--layers", "2", "--batch", "4")),
    Benchmark("ask", ("--repeats", "3"), ("--repeats", "1")),
    Benchmark("startup", ("--repeats", "15"), ("--repeats", "5")),
    Benchmark("gpu", (), ("--frames", "16", "--repeats", "1", "--search-cap", "128"), gpu=True),
)}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called `name`; an unknown name raises listing the valid ones."""
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]
