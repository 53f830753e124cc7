"""`stanchat --help` start-up time in fresh processes, beside the interpreter's own floor.

    python benchmarks/startup.py [--repeats 15]

Runs `python -m stanchat --help` (this checkout's stanchat; the installed `stanchat` script runs
the same `stanchat.cli.main`) and `python -c pass` in turns, each in a fresh process, after one
warm-up round, and compares the medians. Target: under 0.3 s. One more run under
`python -X importtime` lists any heavy module (torch, transformers, gradio, ...) that `--help`
imports: it should import none.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout: its stanchat and benchmarks

from benchmarks.common import interleaved, parser, run  # noqa: E402
from benchmarks.results import Figure, Result, Target  # noqa: E402

TARGET = Target("<", 0.3)  # seconds, the bound for `stanchat --help`
HEAVY = ("torch", "transformers", "gradio", "numpy", "av", "decord", "accelerate", "bitsandbytes", "open_clip")
COMMANDS = {"stanchat --help": ["-m", "stanchat", "--help"], "python -c pass": ["-c", "pass"]}


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--repeats", type=int, default=15, help="runs of each command (median reported)")
    return p


def _run(arguments: list[str]) -> None:
    subprocess.run([sys.executable, *arguments], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def heavy_imports() -> list[str]:
    """Top-level packages from HEAVY that `stanchat --help` imports (`-X importtime` lists every import)."""
    out = subprocess.run([sys.executable, "-X", "importtime", *COMMANDS["stanchat --help"]], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    # lines read "import time:  self [us] | cumulative | imported package", nesting shown by indentation
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    return sorted(names & set(HEAVY))


def measure(args: argparse.Namespace) -> Result:
    """Median wall seconds of both commands, their difference, and the heavy imports."""
    seconds = interleaved({name: (lambda a=arguments: _run(a)) for name, arguments in COMMANDS.items()},
                          args.repeats)
    help_s, floor_s = (statistics.median(seconds[name]) for name in COMMANDS)
    heavy = heavy_imports()
    result = Result("startup", "Start-up (`stanchat --help`)", data={"seconds": seconds, "heavy": heavy},
                    setup=f"{Path(sys.executable).name} {sys.version.split()[0]}, fresh processes taking turns, "
                          f"median of {args.repeats}")
    result.figures.append(Figure("`stanchat --help` wall time", help_s, "s", TARGET,
                                 detail=f"`python -c pass` takes {floor_s:.3f} s on the same machine"))
    result.figures.append(Figure("of which stanchat's own (minus `python -c pass`)", help_s - floor_s, "s"))
    result.figures.append(Figure("heavy packages imported by `--help`", len(heavy), "",
                                 detail=", ".join(heavy) if heavy else "none of " + ", ".join(HEAVY)))
    return result


def report(result: Result) -> None:
    print(f"start-up: {result.setup}")
    for name, values in result.data["seconds"].items():
        print(f"  {name:<16} median {statistics.median(values):.3f} s  (min {min(values):.3f}, max {max(values):.3f})")
    result.print_figures()


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
