"""`stanchat ask --batch REQUESTS.jsonl --out ANSWERS.jsonl`: many questions, answered in batches."""

from __future__ import annotations

import argparse
import logging
import os

from stanchat.errors import StanchatError
from stanchat.options import DEFAULTS

logger = logging.getLogger(__name__)


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batch")
    group.add_argument("--batch", metavar="REQUESTS.jsonl", default=None,
                       help='answer a file of requests, one JSON object a line: {"id", "video", "question"} '
                            '(optional frames, temporal, max_new_tokens, temperature)')
    group.add_argument("--out", metavar="ANSWERS.jsonl", default=None,
                       help="where --batch writes one JSON line per answer as it finishes; a rerun skips "
                            "the requests already answered there")
    group.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                       help=f"requests per padded generate (default {DEFAULTS.batch_size})")


def run_batch(args: argparse.Namespace) -> int:
    """Answer --batch into --out; the video and answer flags are the defaults of every request."""
    from stanchat.batch import answer_file
    from stanchat.commands._shared import generation, load_chat, video_options

    if args.out is None:
        raise StanchatError("--batch needs --out ANSWERS.jsonl")
    if not os.path.isfile(args.batch):
        raise StanchatError(f"--batch {args.batch}: no such file")
    if args.batch_size < 1:
        raise StanchatError(f"--batch-size must be at least 1, got {args.batch_size}")
    defaults = {**video_options(args).__dict__, **generation(args)}  # checked before the model loads
    answered, errors = answer_file(load_chat(args), args.batch, args.out, args.batch_size, defaults)
    print(f"{answered} answered, {errors} errors -> {args.out}")
    return 0
