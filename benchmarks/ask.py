"""End-to-end `stanchat ask` on the bundled tiny preset and example video: where the time goes.

    python benchmarks/ask.py [--repeats 3] [--frames 16] [--video examples/blue-triangle-left.mp4]

Measured in one run: the whole command (`stanchat ask VIDEO QUESTION --model tiny --json`) in fresh
processes, so interpreter start, imports and model loading count; `import stanchat.chat` (torch,
transformers and the rest of what answering needs) in fresh processes; the model load
(`stanchat.load("tiny")`) on its own; and one answer's decode / vision / prefill / generate / total
from `Answer.timings`, with `--temporal stan` and `--temporal mean` taking turns (after one warm-up
round) so that their vision and prefill times compare on equal terms. Medians of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout: its stanchat and benchmarks

from benchmarks.common import cpu_name, parser, run  # noqa: E402
from benchmarks.results import Figure, Result  # noqa: E402

PARTS = ("decode", "vision", "prefill", "generate", "total")  # Answer.timings keys
QUESTION = "What happens in this video?"


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--video", default=str(ROOT / "examples" / "blue-triangle-left.mp4"))
    p.add_argument("--question", default=QUESTION)
    p.add_argument("--model", default="tiny", help="preset (default: the bundled tiny one)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--modes", nargs="+", default=["stan", "mean"], help="temporal modes taking turns")
    p.add_argument("--max-new-tokens", type=int, default=256, help="answer length limit (stanchat's default: 256)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each measurement (median reported)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: as stanchat chooses)")
    return p


def command_seconds(args: argparse.Namespace) -> tuple[list[float], dict]:
    """Wall seconds of the whole `stanchat ask ... --json` in fresh processes, and the last one's JSON."""
    argv = [sys.executable, "-m", "stanchat", "ask", args.video, args.question, "--model", args.model,
            "--frames", str(args.frames), "--max-new-tokens", str(args.max_new_tokens), "--json"] + (["--device", args.device] if args.device else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    seconds, answer = [], {}
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env)
        seconds.append(time.perf_counter() - start)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{out.stderr.strip()}")
        answer = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds, answer


def import_seconds(repeats: int) -> list[float]:
    """Wall seconds of `python -c "import stanchat.chat"` in fresh processes: what every answering
    process imports before it can load a model."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import stanchat.chat"], cwd=ROOT, check=True)
        seconds.append(time.perf_counter() - start)
    return seconds


def load_seconds(args: argparse.Namespace):
    """Seconds of each of `repeats` loads of the model in this process, and the last model."""
    import stanchat

    seconds, chat = [], None
    for _ in range(args.repeats):
        chat = None  # let the previous copy go before the next load
        start = time.perf_counter()
        chat = stanchat.load(args.model, device=args.device)
        seconds.append(time.perf_counter() - start)
    return seconds, chat


def answer_timings(chat, args: argparse.Namespace) -> dict[str, list[dict]]:
    """Answer.timings (plus answer tokens) of `repeats` answers per mode, the modes taking turns;
    the first round warms up (the decode worker starts, caches fill) and is not kept."""
    runs: dict[str, list[dict]] = {mode: [] for mode in args.modes}
    tokenizer = chat.processor.tokenizer
    for round_ in range(1 + args.repeats):
        for mode in args.modes:
            chat.cache.clear()  # every answer decodes and encodes the video, as a fresh `stanchat ask` does
            answer = chat.ask(args.video, args.question, frames=args.frames, temporal=mode,
                              max_new_tokens=args.max_new_tokens)
            tokens = len(tokenizer(answer.text, add_special_tokens=False)["input_ids"])
            if round_ > 0:
                runs[mode].append({**answer.timings, "answer_tokens": tokens, "video_tokens": answer.video_tokens})
    return runs


def measure(args: argparse.Namespace) -> Result:
    """The whole command, the model load and the answer's parts, each a median of the repeats."""
    import torch

    command, cli_answer = command_seconds(args)
    imports = import_seconds(args.repeats)
    loads, chat = load_seconds(args)
    runs = answer_timings(chat, args)
    device = chat.vision_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(torch.get_num_threads())
    result = Result("ask", f"End-to-end `stanchat ask` ({args.model} preset)",
                    data={"command": command, "cli_answer": cli_answer, "imports": imports, "loads": loads,
                          "runs": runs},
                    setup=f"{Path(args.video).name}, {args.frames} frames, \"{args.question}\", greedy, on {name}; "
                          f"median of {args.repeats}")
    result.figures.append(Figure("whole command, fresh process (`stanchat ask ... --json`)",
                                 statistics.median(command), "s", detail="interpreter, imports, load and answer"))
    result.figures.append(Figure("imports, fresh process (`python -c \"import stanchat.chat\"`)",
                                 statistics.median(imports), "s", detail="interpreter, torch, transformers, stanchat"))
    result.figures.append(Figure(f"model load (`stanchat.load(\"{args.model}\")`)", statistics.median(loads), "s",
                                 detail=f"the first in this process took {loads[0]:.2f} s"))
    first = args.modes[0]
    median = {mode: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for mode, rows in runs.items()}
    for part in PARTS:
        result.figures.append(Figure(f"{part} ({first})", median[first][part], "s"))
    result.figures.append(Figure(f"answer length ({first})", median[first]["answer_tokens"], "tokens",
                                 detail=f"{median[first]['video_tokens']:.0f} video tokens in the prompt"))
    for other in args.modes[1:]:
        for part in ("vision", "prefill"):
            result.figures.append(Figure(f"{first} / {other} {part} time", median[first][part] / median[other][part], "x",
                                         detail=f"{median[first][part] * 1e3:.1f} ms vs {median[other][part] * 1e3:.1f} ms"))
    return result


def report(result: Result) -> None:
    print(f"stanchat ask: {result.setup}")
    runs = result.data["runs"]
    print(f"{'mode':<8}" + "".join(f"{part + ' s':>11}" for part in PARTS) + f"{'tokens':>8}")
    for mode, rows in runs.items():
        values = [statistics.median(r[part] for r in rows) for part in PARTS]
        tokens = statistics.median(r["answer_tokens"] for r in rows)
        print(f"{mode:<8}" + "".join(f"{v:>11.3f}" for v in values) + f"{tokens:>8.0f}")
    result.print_figures()
    print(f"answer (command): {result.data['cli_answer'].get('answer', '')!r}")


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
