"""Ask one question about a video. The answer streams to the terminal as it is generated;
`--json` prints one object instead (answer, video, frames, timestamps, video_tokens, temporal,
model, preset, timings). A preset's weights that are not on disk yet are fetched and converted first."""

from __future__ import annotations

import argparse
import json
import logging

from stanchat.commands._shared import (add_generation_arguments, add_model_arguments, add_sampling_arguments,
                                       check_args, generation, load_chat, video_options)
from stanchat.commands.ask_batch import add_batch_arguments, run_batch
from stanchat.errors import StanchatError
from stanchat.options import check_question
from stanchat.video.watchdog import prestart

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", nargs="?", help="path of the video file")
    parser.add_argument("question", nargs="?", help="what to ask about it")
    add_generation_arguments(parser)
    add_sampling_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    add_batch_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.batch is not None:
        return run_batch(args)
    if args.video is None or args.question is None:
        raise StanchatError("stanchat ask needs a VIDEO and a QUESTION (or --batch REQUESTS.jsonl --out ANSWERS.jsonl)")
    question = check_question(args.question)
    check_args(args)
    prestart()  # the decode worker starts, and imports torch for the fit, while the model loads
    chat = load_chat(args)
    keywords = {**video_options(args).__dict__, **generation(args)}  # decoding is timed in the answer
    if args.json:
        answer = chat.ask(args.video, question, **keywords)
        print(json.dumps({**answer.to_dict(), "preset": chat.preset}))
    else:
        stream = chat.stream(args.video, question, **keywords)
        for piece in stream:
            print(piece, end="", flush=True)
        print()
        answer = stream.answer
    logger.debug("%d frames, %d video tokens (%s); timings %s", answer.frames, answer.video_tokens,
                 answer.temporal, {k: round(v, 3) for k, v in answer.timings.items()})
    return 0
