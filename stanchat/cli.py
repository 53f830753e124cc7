"""The `stanchat` command line: `main(argv=None) -> int`.

Each subcommand lives in `stanchat/commands/<name>.py` with `add_arguments(parser)` and
`run(args) -> int`; those modules import nothing heavy at import time, so `stanchat --help`
stays fast. Errors a user can cause (`StanchatError`) print one line and exit 2; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from stanchat import __version__, logs
from stanchat.errors import StanchatError

# name -> one-line help. Modules are imported only to build their own parser.
COMMANDS = {
    "api": "serve an OpenAI-compatible API (chat completions with video, streamed or not)",
    "ask": "ask one question about a video (the answer streams as it is generated)",
    "chat": "chat about a video: several turns, /video, /frames, /reset, /exit",
    "convert": "convert released Mug-STAN weights (or an original LLaVA v1) into stanchat model directories",
    "eval": "evaluate: zero-shot retrieval, recognition, video QA, time-reversal probe",
    "frames": "show the frames (and timestamps) the model will see",
    "models": "list the model presets: parts, tower pairing, what is on this machine, download sizes",
    "pull": "fetch and convert everything a preset needs now (for a machine that will be offline)",
    "serve": "serve the chat app in a browser (Gradio): upload, frames strip, streamed chat, compare",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stanchat",
        description="Zero-shot video chat: LLaVA with a Mug-STAN temporal branch (a video costs one image).",
    )
    parser.add_argument("--version", action="version", version=f"stanchat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"stanchat.commands.{name}")
        cmd = sub.add_parser(name, help=help_text, description=module.__doc__)
        cmd.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logs.configure(args.debug)
    try:
        return args.run(args)
    except StanchatError as err:
        if args.debug:
            raise
        print(f"stanchat: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stanchat: interrupted", file=sys.stderr)
        return 130
