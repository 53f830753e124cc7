"""Measurements of the tiny recipe on held-out synthetic clips (the numbers of docs/RESULTS.md).

    python -m training.recipes.tiny_results videoqa --preset DIR --probe FILE [--temporal stan|mean]
    python -m training.recipes.tiny_results contrast --model DIR --probe FILE [--scoring mug] [--frame-mean]
    python -m training.recipes.tiny_results paired --first DIR:SCORING --second DIR:SCORING --probe FILE
    python -m training.recipes.tiny_results trail --run DIR
    python -m training.recipes.tiny_results stills --run DIR
    python -m training.recipes.tiny_results shapes --run DIR
    python -m training.recipes.tiny_results describe --run DIR [--preset DIR]
    python -m training.recipes.tiny_results events --out DIR [--preset DIR] [--events 2 4 8] [--clips N]

One module per subcommand (`SUBCOMMANDS`), each with `HELP`, `add_arguments(parser)`, `run(args)
-> dict` and the measurement itself, documented there; what they share is in `common`. The result
is printed as JSON. A missing input (probe file, run folder, preset) is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from stanchat.errors import StanchatError
from training.recipes.tiny_results.common import compare_description, frame_features, sign_test_p
from training.recipes.tiny_results.contrast import contrast
from training.recipes.tiny_results.describe import describe_paths
from training.recipes.tiny_results.paired import paired_captions
from training.recipes.tiny_results.shapes import still_shapes
from training.recipes.tiny_results.stills import still_direction
from training.recipes.tiny_results.trail import trail_closeness
from training.recipes.tiny_results.videoqa import ask_examples, video_qa

__all__ = ["ask_examples", "compare_description", "contrast", "describe_paths", "frame_features", "main",
           "paired_captions", "sign_test_p", "still_direction", "still_shapes", "trail_closeness", "video_qa"]

SUBCOMMANDS = ("videoqa", "contrast", "paired", "trail", "stills", "shapes", "describe", "events")  # = module names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.tiny_results",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"training.recipes.tiny_results.{name}")
        command = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(command)
        command.set_defaults(measure=module.run)  # not `run`: that is the --run option of several
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    torch.set_num_threads(1)
    try:
        result = args.measure(args)
    except StanchatError as err:
        print(f"tiny_results: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0
