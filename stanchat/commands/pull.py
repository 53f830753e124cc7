"""Fetch and convert everything a preset needs now, for a machine that will be offline later:
the released STAN file (converted into $STANCHAT_HOME), and the LLaVA (a hub snapshot, or an
original-layout LLaVA v1 converted once). Prints each part, where it is and how big, and below a
converted part the hub file or snapshot it was made from, where that sits in the hub cache and how big."""

from __future__ import annotations

import argparse

from stanchat.pretrained import preset_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", metavar="PRESET", help=f"one of {', '.join(preset_names())}")
    parser.add_argument("--revision", default=None, help="hub revision of the released STAN file (default main)")


def run(args: argparse.Namespace) -> int:
    from stanchat.fetch import pull, size_text
    from stanchat.pretrained import resolve

    spec = resolve(args.preset, revision=args.revision)  # an unknown name fails before any download
    for part in pull(spec):
        state = "fetched" if part.new else "already here"
        print(f"{part.what}: {state}, {part.path} ({size_text(part.bytes)})")
        for download in part.downloads:  # what a conversion read: the released file, the hub snapshots
            how = "downloaded" if download.new else "found in the hub cache"
            print(f"  from {download.what}: {how}, {download.path} ({size_text(download.bytes)})")
    print(f"ready: stanchat ask VIDEO \"What happens?\" --model {args.preset}")
    return 0
