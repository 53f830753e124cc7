"""Run every benchmark, each in its own process, and write docs/PERFORMANCE.md.

    python -m benchmarks [--only NAME ...] [--quick] [--out PATH]      # or: make bench

A benchmark that fails is recorded as failed on the page (its last output line says why) and the
others still run; the GPU suite is skipped, with "no GPU on this machine" on the page, where CUDA is
not available. Every benchmark's output streams to the terminal as it runs.
"""

from __future__ import annotations

import argparse
import collections
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import BENCHMARKS, Benchmark, get_benchmark
from benchmarks.common import load_average
from benchmarks.machine import describe, gpu_name
from benchmarks.page import Run, load_text, render
from benchmarks.results import Result

ROOT = Path(__file__).resolve().parents[1]
NO_GPU = "no GPU on this machine"


def command(benchmark: Benchmark, quick: bool) -> list[str]:
    """The benchmark's command line, as a person would type it from the checkout's root."""
    return ["python", f"benchmarks/{benchmark.name}.py", *(benchmark.quick if quick else benchmark.full)]


def run_one(benchmark: Benchmark, quick: bool, has_gpu: bool, timeout: float) -> Run:
    """Run one benchmark in a fresh process (output streamed through) and collect its Result."""
    argv = command(benchmark, quick)
    shown = shlex.join(argv)
    if benchmark.gpu and not has_gpu:
        result = Result(benchmark.name, benchmark.title, notes=list(benchmark.targets), status="skipped", reason=NO_GPU)
        return Run(result, shown, 0.0, (load_average(), load_average()))
    print(f"\n=== {shown}", flush=True)
    before, started = load_average(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        rc, tail = _stream([sys.executable, *argv[1:], "--json", str(out)], timeout)
        if rc == 0 and out.exists():
            result = Result.load(out)
        else:
            reason = f"exit status {rc}: {tail[-1] if tail else 'no output'}" if rc is not None else f"over {timeout:.0f} s"
            result = Result(benchmark.name, benchmark.title, notes=list(benchmark.targets), status="failed",
                            reason=reason)
    return Run(result, shown, time.perf_counter() - started, (before, load_average()))


def _stream(argv: list[str], timeout: float) -> tuple[int | None, list[str]]:
    """Run `argv` from the checkout's root, echoing its output; (exit status or None on timeout,
    its last lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=5)
    deadline = time.monotonic() + timeout
    with subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as child:
        for line in child.stdout:
            print(line, end="", flush=True)
            if line.strip():
                tail.append(line.strip())
            if time.monotonic() > deadline:
                child.kill()
                return None, list(tail)
        return child.wait(), list(tail)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"run only these ({', '.join(BENCHMARKS)})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test; the page says so)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "PERFORMANCE.md"), help="page to write")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one benchmark may take")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        selected = [get_benchmark(name) for name in args.only] if args.only else list(BENCHMARKS.values())
    except KeyError as err:
        parser.error(err.args[0])
    load_before, gpu = load_average(), gpu_name()
    machine = describe(ROOT, gpu)
    runs = [run_one(benchmark, args.quick, bool(gpu), args.timeout) for benchmark in selected]
    machine["load average (1 min)"] = f"{load_text(load_before)} before the run, {load_text(load_average())} after"
    suite = shlex.join(["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(runs, machine, suite, args.quick))
    failed = [run.result.name for run in runs if run.result.status == "failed"]
    print(f"\nwrote {out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
