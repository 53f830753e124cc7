"""Arguments and model loading shared by `stanchat ask` and `stanchat chat` (light imports only)."""

from __future__ import annotations

import argparse

from stanchat.options import DEFAULTS, MAX_CANDIDATES, SELECT_MODES, TEMPORAL_MODES, VideoOptions
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
                            "concat: every frame's tokens (FreeVA-style); segments: --segments windows, each "
                            "STAN's tokens after its time span")
    group.add_argument("--segments", type=int, default=DEFAULTS.segments,
                       help=f"windows of --temporal segments (the first frames %% S windows take one frame more; "
                            f"default {DEFAULTS.segments})")
    group.add_argument("--select", choices=SELECT_MODES, default=DEFAULTS.select,
                       help="uniform: --frames sampled by --strategy (default); question: the --frames frames the "
                            "question is about among --candidates, by Mug's text-to-frame weights")
    group.add_argument("--candidates", type=int, default=DEFAULTS.candidates,
                       help=f"frames scored against the question under --select question (at most {MAX_CANDIDATES} "
                            f"and the video's own frames; default {DEFAULTS.candidates})")
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


def video_options(args: argparse.Namespace, **changes) -> VideoOptions:
    """The command's `VideoOptions` (frames, temporal, strategy, fps, start, end, seed, segments, select,
    candidates), with `changes` (e.g. another frame count); checked when made."""
    given = {"frames": args.frames, "temporal": args.temporal, "strategy": args.strategy, "fps": args.fps,
             "start": args.start, "end": args.end, "seed": args.seed, "segments": args.segments,
             "select": args.select, "candidates": args.candidates}
    return VideoOptions(**{**given, **changes})


def check_args(args: argparse.Namespace) -> None:
    """The cheap checks, so that bad input fails before minutes of model loading."""
    video_options(args)
    generation(args)
    check_source(args.video)


def load_chat(args: argparse.Namespace):
    """`stanchat.load` from the parsed model arguments, resolved into one spec once. A preset's missing
    weights are fetched first, with the hub's download progress bars; then the terminal shows the
    answer, not transformers' weight-loading progress bars (they stay on with --debug)."""
    from transformers.utils import logging as hf_logging

    from stanchat.chat import load
    from stanchat.fetch import ensure
    from stanchat.pretrained import resolve

    spec = ensure(resolve(args.model, args.llava, args.stan, args.revision))
    if not args.debug:
        hf_logging.disable_progress_bar()
    return load(spec, device=args.device, dtype=args.dtype, load_in_4bit=args.load_4bit, load_in_8bit=args.load_8bit)


def generation(args: argparse.Namespace) -> dict:
    """The answer's flags as `Session.ask` keywords, checked (`sampling_of` raises on a bad value)."""
    from stanchat.session import sampling_of  # torch-free

    given = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    sampling_of(**given)
    return given
