"""Arguments and model loading shared by `stanchat ask` and `stanchat chat` (light imports only)."""

from __future__ import annotations

import argparse

from stanchat.options import DEFAULTS, TEMPORAL_MODES, check_frames
from stanchat.pretrained import DEFAULT_PRESET, preset_names
from stanchat.video import check_source


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model/--llava/--stan, device, dtype and quantisation flags."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, metavar="PRESET",
                       help=f"model preset (default {DEFAULT_PRESET}; one of {', '.join(preset_names())})")
    group.add_argument("--llava", default=None, metavar="DIR_OR_ID", help="LLaVA directory or hub id (overrides the preset's)")
    group.add_argument("--stan", default=None, metavar="DIR", help="converted STAN (VideoCLIP) directory (overrides the preset's)")
    group.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    group.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: float16 on GPU, float32 on CPU)")
    group.add_argument("--revision", default=None,
                       help="hub revision of the preset's released STAN file when it is fetched (default main)")
    bits = group.add_mutually_exclusive_group()
    bits.add_argument("--load-4bit", action="store_true", help="quantise the LLM to 4 bits (bitsandbytes)")
    bits.add_argument("--load-8bit", action="store_true", help="quantise the LLM to 8 bits (bitsandbytes)")


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """Frames, temporal mode and decoding flags."""
    group = parser.add_argument_group("video and generation")
    group.add_argument("--frames", type=int, default=DEFAULTS.frames,
                       help=f"frames sampled uniformly over the video (1..64, default {DEFAULTS.frames})")
    group.add_argument("--temporal", choices=TEMPORAL_MODES, default=DEFAULTS.temporal,
                       help="stan: STAN-grafted L+1 tokens (default); mean: frame-mean baseline; "
                            "concat: every frame's tokens (FreeVA-style)")
    group.add_argument("--max-new-tokens", type=int, default=DEFAULTS.max_new_tokens,
                       help=f"answer length limit in tokens (default {DEFAULTS.max_new_tokens})")
    group.add_argument("--temperature", type=float, default=DEFAULTS.temperature,
                       help=f"sampling temperature; 0 is greedy (default {DEFAULTS.temperature:g})")


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """--strategy, --fps, --start, --end, --seed: which frames of the video are sampled (frames, ask, chat)."""
    from stanchat.video import STRATEGIES

    group = parser.add_argument_group("sampling")
    group.add_argument("--strategy", choices=list(STRATEGIES), default="uniform", help="how frames are picked (default: %(default)s)")
    group.add_argument("--fps", type=float, default=None, help="rate for --strategy fps (still at most --frames frames)")
    group.add_argument("--start", type=float, default=None, metavar="SEC", help="sample from this time on")
    group.add_argument("--end", type=float, default=None, metavar="SEC", help="sample before this time")
    group.add_argument("--seed", type=int, default=None, help="seed for --strategy random")


def sampling(args: argparse.Namespace) -> dict:
    """The sampling arguments as `load_video` keywords (besides the frame count)."""
    return {"strategy": args.strategy, "fps": args.fps, "start": args.start, "end": args.end, "generator": args.seed}


def check_sampling(args: argparse.Namespace) -> None:
    """Refuse an impossible sampling request (fps without a rate, end before start) before the model loads."""
    from stanchat.video.sample import check_request

    check_request(args.frames, args.strategy, args.fps, args.start, args.end)


def load_clip(args: argparse.Namespace, path=None, frames: int | None = None, fit=None):
    """The video (`path`, else the command's) sampled as the arguments ask, `frames` frames (else
    --frames; checked first against the graft's limit by the caller), fitted in the decoder by `fit`
    (the chat's `preprocessor.fit`: frames leave the decode worker at the tower's input size)."""
    from stanchat.video import load_video

    return load_video(path or args.video, frames=frames or args.frames, fit=fit, **sampling(args))


def check_args(args: argparse.Namespace) -> None:
    """The cheap checks, so that bad input fails before minutes of model loading."""
    check_frames(args.frames)
    check_source(args.video)


def load_chat(args: argparse.Namespace):
    """`stanchat.load` from the parsed model arguments. A preset's missing weights are fetched first,
    with the hub's download progress bars; then the terminal shows the answer, not transformers'
    weight-loading progress bars (they stay on with --debug)."""
    from transformers.utils import logging as hf_logging

    from stanchat.chat import load
    from stanchat.fetch import ensure

    ensure(args.model, args.llava, args.stan, args.revision)
    if not args.debug:
        hf_logging.disable_progress_bar()
    return load(args.model, llava=args.llava, stan=args.stan, device=args.device, dtype=args.dtype,
                load_in_4bit=args.load_4bit, load_in_8bit=args.load_8bit, revision=args.revision)


def generation(args: argparse.Namespace) -> dict:
    return {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
