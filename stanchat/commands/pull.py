"""Fetch and convert everything a preset needs now, for a machine that will be offline later:
the released STAN file (converted into $STANCHAT_HOME), and the LLaVA (a hub snapshot, or an
original-layout LLaVA v1 converted once). Prints what it fetched, where, and how big."""

from __future__ import annotations

import argparse

from stanchat.pretrained import preset_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", metavar="PRESET", help=f"one of {', '.join(preset_names())}")
    parser.add_argument("--revision", default=None, help="hub revision of the released STAN file (default main)")


def run(args: argparse.Namespace) -> int:
    from stanchat.fetch import pull
    from stanchat.pretrained import get_preset

    get_preset(args.preset)  # an unknown name fails before any download
    for part in pull(args.preset, args.revision):
        state = "fetched" if part.new else "already here"
        print(f"{part.what}: {state}, {part.path} ({part.bytes / 1e9:.2f} GB)")
    print(f"ready: stanchat ask VIDEO \"What happens?\" --model {args.preset}")
    return 0
