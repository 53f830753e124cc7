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
    title: str  # its heading on the page when it produced no result of its own (skipped, failed)
    full: tuple[str, ...]  # arguments for the results page (sizes picked for ~20 minutes on 2 CPU cores)
    quick: tuple[str, ...]  # arguments under --quick: smaller sizes, minutes in all
    targets: tuple[str, ...] = ()  # the targets it judges, named on the page when it did not run
    gpu: bool = False  # needs CUDA: skipped, and the page says so, where there is none


# in the order of the results page
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("stan_overhead", "STAN overhead", ("--frames", "8", "--repeats", "3"),
              ("--frames", "8", "--repeats", "1", "--layers", "6"), ("CLIP+STAN / CLIP time at T = 8 <= 1.25",)),
    Benchmark("prefill", "LLM prefill of a video", ("--frames", "8", "16", "--repeats", "3"),
              ("--frames", "8", "--repeats", "1", "--layers", "2", "--width", "512"),
              ("stan / concat prefill time at T = 8 <= 0.2",)),
    Benchmark("decode", "Video decoding", (), ("--seconds", "60", "--repeat", "2"),
              ("seeking >= 10x faster than a full decode of a 5-minute clip",)),
    Benchmark("eval_memory", "Mug scoring memory", (),
              ("--n-full", "300", "--n-literal", "20,40", "--n-one-shot", "50,100"),
              ("chunked 1,000 x 1,000 Mug scoring peak < 1 GiB",)),
    Benchmark("train_throughput", "Training throughput", (),
              ("--steps", "2", "--layers", "2", "--batch", "4", "--loader-clips", "16", "--loader-rounds", "1")),
    Benchmark("ask", "End-to-end `stanchat ask`", ("--repeats", "3"), ("--repeats", "1")),
    Benchmark("selection", "Question-guided frame selection on a long clip", ("--repeats", "3"),
              ("--minutes", "2", "--candidates", "64", "--repeats", "1")),
    Benchmark("serve", "`stanchat api` under concurrent clients", ("--requests", "200", "--clients", "16"),
              ("--requests", "32", "--clients", "16", "--engines", "one", "batched")),
    Benchmark("startup", "Start-up (`stanchat --help`)", ("--repeats", "15"), ("--repeats", "5"),
              ("`stanchat --help` < 0.3 s",)),
    Benchmark("gpu", "GPU: LLaVA-1.5-7B and CLIP-L/14-336 shapes", (),
              ("--frames", "16", "--repeats", "1", "--search-cap", "128"),
              ("7B in 4-bit with 16 frames: peak memory < 8 GiB",), gpu=True),
)}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called `name`; an unknown name raises listing the valid ones."""
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]
