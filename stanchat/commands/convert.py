"""Convert the authors' released Mug-STAN checkpoint into a stanchat VideoCLIP directory."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    official = sub.add_parser("official", help="the released mmaction checkpoint (e.g. Mug-StanL14.bin)")
    official.add_argument("checkpoint", help="path to the released .bin/.pth file")
    official.add_argument("--clip", required=True, help="HF CLIP hub id or local dir: supplies only the architecture config")
    official.add_argument("--out", required=True, help="output directory (safetensors + config)")
    official.add_argument("--depth", type=int, default=None, help="STAN depth K (default: read from the checkpoint)")


def run(args: argparse.Namespace) -> int:
    from stanchat.convert import convert_official

    out = convert_official(args.checkpoint, clip=args.clip, out=args.out, depth=args.depth)
    print(f"wrote {out}")
    return 0
