"""Question-guided frame selection against a plain `ask` on a long clip: what choosing costs.

    python benchmarks/selection.py [--minutes 10] [--candidates 256] [--repeats 3]

Measured in one run, on a generated clip (`--minutes` long, `--size` pixels, `--fps` frames a
second, libx264 with a keyframe every second): a plain answer (`--frames` frames sampled uniformly,
`--temporal stan`) and a question-selected one (`--select question --candidates N`: N candidates
decoded at the model's input size, scored with Mug's text-to-frame weights, the window of highest
weight encoded), taking turns, every cache emptied before each, so both decode and encode afresh.
The figure is the ratio of their medians (Answer.timings["total"]), with the selection's decode
and scoring cost per candidate frame beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout: its stanchat and benchmarks

from benchmarks.common import cpu_name, parser, run  # noqa: E402
from benchmarks.results import Figure, Result  # noqa: E402

QUESTION = "Which way does the red circle move?"


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--model", default="tiny", help="preset (default: the bundled tiny one)")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the generated clip")
    p.add_argument("--size", type=int, default=64, help="its width and height in pixels")
    p.add_argument("--fps", type=int, default=4, help="its frame rate")
    p.add_argument("--frames", type=int, default=16, help="frames the LLM's video tokens come from")
    p.add_argument("--candidates", type=int, default=256, help="frames scored against the question")
    p.add_argument("--repeats", type=int, default=3, help="timed answers of each kind (median reported)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: as stanchat chooses)")
    return p


def write_clip(path: Path, seconds: float, size: int, fps: int) -> Path:
    """A red disc drifting over a dark background, libx264 ultrafast, a keyframe every second."""
    import av
    import numpy as np

    yy, xx = np.mgrid[:size, :size]
    options = {"preset": "ultrafast", "g": str(fps), "bframes": "0"}
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options=options)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            image = np.full((size, size, 3), 24, np.uint8)
            x = size / 2 + size / 3 * np.sin(i / (5 * fps))
            image[(xx - x) ** 2 + (yy - size / 2) ** 2 < (size / 8) ** 2] = (220, 40, 40)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


def answers(chat, video: str, args: argparse.Namespace) -> dict[str, list[dict]]:
    """Answer.timings of `repeats` plain and selected answers, taking turns after one warm-up round,
    every cache emptied first."""
    kinds = {"plain": {}, "select": {"select": "question", "candidates": args.candidates}}
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for round_ in range(1 + args.repeats):
        for kind, options in kinds.items():
            chat.cache.clear()
            chat.candidate_cache.clear()
            answer = chat.ask(video, QUESTION, frames=args.frames, max_new_tokens=8, **options)
            if round_ > 0:
                runs[kind].append(answer.timings)
    return runs


def measure(args: argparse.Namespace) -> Result:
    import torch

    import stanchat

    chat = stanchat.load(args.model, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        video = str(write_clip(Path(tmp) / "long.mp4", args.minutes * 60, args.size, args.fps))
        runs = answers(chat, video, args)
    median = {kind: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for kind, rows in runs.items()}
    device = chat.vision_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(torch.get_num_threads())
    plain, chosen = median["plain"]["total"], median["select"]["total"]
    result = Result("selection", "Question-guided frame selection on a long clip", data={"runs": runs},
                    setup=f"{args.minutes:g}-minute clip, {args.size} px at {args.fps} fps, {args.frames} frames, "
                          f"{args.candidates} candidates, {args.model} preset, on {name}; median of {args.repeats}")
    result.figures.append(Figure("select question / plain ask, total time", chosen / plain, "x",
                                 detail=f"{chosen:.2f} s vs {plain:.2f} s"))
    for part in ("decode", "select"):
        result.figures.append(Figure(f"selection's {part} per candidate frame",
                                     1e3 * median["select"][part] / args.candidates, "ms"))
    return result


def report(result: Result) -> None:
    print(f"selection: {result.setup}")
    for kind, rows in result.data["runs"].items():
        parts = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        print(f"{kind:<7}" + "".join(f"{key} {value:.3f} s  " for key, value in parts.items()))
    result.print_figures()


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
