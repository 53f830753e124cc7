"""Serve the chat app in a browser (Gradio): upload a video or pick an example, see the sampled
frames with their timestamps, chat with streamed answers (stop, regenerate, clear), compare
temporal modes side by side, and see which frames a question attends to. Binds 127.0.0.1 and
makes no public link unless --host or --share say otherwise; one model call runs at a time
(--concurrency) with a bounded queue (--queue-size). Needs `pip install 'stanchat[demo]'`."""

from __future__ import annotations

import argparse
import importlib.util
import logging

from stanchat.app.config import DEFAULT_PORT, AppConfig, find_examples
from stanchat.commands._shared import add_generation_arguments, add_model_arguments, add_sampling_arguments, load_chat
from stanchat.errors import StanchatError
from stanchat.options import LOCALHOST

logger = logging.getLogger(__name__)

APP = AppConfig()  # the app's defaults, shown in --help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    group = parser.add_argument_group("server")
    group.add_argument("--host", default=LOCALHOST,
                       help=f"address to listen on (default {LOCALHOST}: this machine only; 0.0.0.0 opens it "
                            f"to the network)")
    group.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    group.add_argument("--share", action="store_true", help="also make a public gradio.live link (off by default)")
    app = parser.add_argument_group("app")
    add_app_arguments(app)
    app.add_argument("--max-frame-pixels", type=int, default=APP.max_frame_pixels, metavar="PIXELS",
                     help=f"largest video frame accepted, in pixels (width x height); larger is refused before "
                          f"decoding (default {APP.max_frame_pixels}: 8K, 8192x4352)")
    add_generation_arguments(parser)  # the UI's initial frames, temporal mode and decoding settings
    add_sampling_arguments(parser)  # how every video's frames are picked (by fps, in a time window)


def add_app_arguments(group: argparse._ArgumentGroup) -> None:
    """The app's examples and limits: `stanchat serve`'s, and `stanchat api --with-app`'s."""
    group.add_argument("--examples", action="append", metavar="PATH",
                       help="an example video, GIF or image, or a folder of them; repeatable")
    group.add_argument("--max-file-size", default=APP.max_file_size,
                       help=f"largest upload accepted, e.g. 50MB (default {APP.max_file_size})")
    group.add_argument("--max-duration", type=float, default=APP.max_duration,
                       help=f"longest video accepted, seconds (default {APP.max_duration:g})")
    group.add_argument("--concurrency", type=int, default=APP.concurrency,
                       help=f"model calls running at once across all users (default {APP.concurrency})")
    group.add_argument("--queue-size", type=int, default=APP.queue_size,
                       help=f"requests that may wait for the model; more are turned away (default {APP.queue_size})")
    group.add_argument("--max-sessions", type=int, default=APP.max_sessions,
                       help=f"conversations kept in memory, each with its video; the oldest are dropped "
                            f"(default {APP.max_sessions})")


def app_limits(args: argparse.Namespace) -> dict:
    """The values of `add_app_arguments` and --max-frame-pixels (stanchat api has its own, shared with
    the API), as AppConfig fields."""
    return dict(max_duration=args.max_duration, max_file_size=args.max_file_size,
                max_frame_pixels=args.max_frame_pixels, concurrency=args.concurrency,
                queue_size=args.queue_size, max_sessions=args.max_sessions, examples=find_examples(args.examples))


def app_config(args: argparse.Namespace) -> AppConfig:
    """The app's settings from the parsed arguments (checked: a bad value fails before loading)."""
    return AppConfig(frames=args.frames, temporal=args.temporal, max_new_tokens=args.max_new_tokens,
                     temperature=args.temperature, strategy=args.strategy, fps=args.fps, start=args.start,
                     end=args.end, seed=args.seed, segments=args.segments, select=args.select,
                     candidates=args.candidates, **app_limits(args))


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise StanchatError("stanchat serve needs gradio: pip install 'stanchat[demo]'")
    config = app_config(args)
    if not 0 <= args.port <= 65535:
        raise StanchatError(f"--port must be 0..65535, got {args.port}")
    chat = load_chat(args)
    from stanchat.app.server import launch, private_upload_folder
    from stanchat.app.ui import build_app

    with private_upload_folder():
        launch(build_app(chat, config), config, host=args.host, port=args.port, share=args.share)
    return 0
