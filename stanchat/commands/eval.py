"""Evaluate video models the same way every time, and record everything needed to reproduce a number.

  stanchat eval retrieval   --dataset msrvtt --data-root DIR --model DIR --out results/
  stanchat eval recognition --dataset k400   --data-root DIR --model DIR --out results/
  stanchat eval videoqa     --dataset msvd-qa --data-root DIR --model PRESET --out results/
  stanchat eval reverse     --data DIR_OR_JSONL --model DIR --out results/
  stanchat eval mcq         --data QUESTIONS.jsonl --model PRESET --out results/

Each run writes <task>.json (metrics, model, frames, tokens, prompts, dataset counts, skipped
videos, commit, date), <task>.md and <task>.png into --out. Video features are cached under
--cache-dir; `accelerate launch -m stanchat eval ...` shards the work across processes.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from stanchat.eval.config import (
    PROTOCOL_TOKENS, TIE_RULES, MCQConfig, RecognitionConfig, RetrievalConfig, ReverseConfig, VideoQAConfig,
)
from stanchat.options import SCORING_MODES, TEMPORAL_MODES



def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stanchat.datasets import dataset_names

    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the usage examples in lines
    sub = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    for task, cls, about in (
        ("retrieval", RetrievalConfig, "zero-shot text<->video retrieval: R@1/5/10, MdR, MnR"),
        ("recognition", RecognitionConfig, "zero-shot action recognition from class names: top-1/5, mean class accuracy"),
        ("videoqa", VideoQAConfig, "open-ended video QA with the chat model (resumable JSONL, optional judge)"),
    ):
        p = sub.add_parser(task, help=about, description=about)
        _debug(p)
        registry = "qa" if task == "videoqa" else task
        p.add_argument("--dataset", required=True, help=f"one of: {', '.join(dataset_names(registry))}")
        p.add_argument("--data-root", required=True, help="folder holding the dataset's videos and annotations")
        p.add_argument("--ann", help="annotation file (default: the dataset's usual file under --data-root)")
        p.add_argument("--split", help="annotation split (default: the dataset's evaluation split)")
        p.add_argument("--out", required=True, help=f"folder for {task}.json, {task}.md, {task}.png")
        p.add_argument("--frames", type=int, default=cls.frames, help="frames per video (default: %(default)s)")
        p.add_argument("--device", help="torch device (default: accelerate's choice: this process's GPU, else CPU)")
    _retrieval_args(sub.choices["retrieval"])
    _recognition_args(sub.choices["recognition"])
    _videoqa_args(sub.choices["videoqa"])
    _reverse_args(sub.add_parser("reverse", help="time-reversal probe: features and answers forwards vs backwards",
                                 description="time-reversal probe: features and answers forwards vs backwards"))
    about = "multiple-choice video QA scored by likelihood (each option's log-probability as the answer)"
    _mcq_args(sub.add_parser("mcq", help=about, description=about))


def _debug(parser: argparse.ArgumentParser) -> None:
    # also accepted after the task name; SUPPRESS keeps `stanchat eval --debug TASK` working too
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logs")


def _model_args(p: argparse.ArgumentParser, cls) -> None:
    p.add_argument("--model", required=True, help="saved model directory (VideoCLIP or CoCa) or preset name")
    p.add_argument("--tokens", type=int, default=cls.tokens,
                   help=f"text tokens (default: {PROTOCOL_TOKENS}, or the model's text length if it has fewer)")
    p.add_argument("--scoring", choices=SCORING_MODES, default=cls.scoring, help="text-video score (default: %(default)s)")
    p.add_argument("--cache-dir", help="video-feature cache (default: $STANCHAT_HOME/eval-features)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached video features")
    p.add_argument("--batch-size", type=int, default=cls.batch_size, help="videos per forward pass (default: %(default)s)")
    p.add_argument("--workers", type=int, default=cls.workers, help="decoding threads (default: %(default)s)")


def _retrieval_args(p: argparse.ArgumentParser) -> None:
    _model_args(p, RetrievalConfig)
    p.add_argument("--dual-softmax", action="store_true", help="re-rank with dual softmax (flagged in the results)")
    p.add_argument("--dsl-temperature", type=float, default=RetrievalConfig.dsl_temperature, help="(default: %(default)s)")
    p.add_argument("--ties", choices=TIE_RULES, default=RetrievalConfig.ties, help="how tied scores rank (default: %(default)s)")
    p.add_argument("--chunk-size", type=int, default=RetrievalConfig.chunk_size, help="Mug block size (default: %(default)s)")


def _recognition_args(p: argparse.ArgumentParser) -> None:
    _model_args(p, RecognitionConfig)
    p.add_argument("--template", dest="templates", action="append",
                   help='prompt template with {} for the class name, e.g. "a video of a person {}." '
                        "(repeatable; default: the raw class name)")
    p.add_argument("--clips", type=int, default=RecognitionConfig.clips, help="temporal views (default: %(default)s)")
    p.add_argument("--crops", type=int, choices=(1, 3), default=RecognitionConfig.crops, help="spatial views (default: %(default)s)")
    p.add_argument("--ties", choices=TIE_RULES, default=RecognitionConfig.ties, help="how tied scores rank (default: %(default)s)")
    p.add_argument("--chunk-size", type=int, default=RecognitionConfig.chunk_size, help="Mug block size (default: %(default)s)")


def _videoqa_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="chat preset (default: stanchat's default preset unless --llava and --stan are given)")
    p.add_argument("--llava", help="LLaVA directory or hub id (overrides the preset's)")
    p.add_argument("--stan", help="STAN (VideoCLIP) directory (overrides the preset's)")
    p.add_argument("--temporal", choices=TEMPORAL_MODES, default=VideoQAConfig.temporal, help="(default: %(default)s)")
    p.add_argument("--prompt", default=VideoQAConfig.prompt, help="question template with {question} (default: LLaVA-1.5's short-answer prompt)")
    p.add_argument("--max-new-tokens", type=int, default=VideoQAConfig.max_new_tokens, help="(default: %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="model dtype (default: stanchat.load's)")
    judge = p.add_argument_group("judge (optional; there is no default judge)")
    judge.add_argument("--judge-model", help="local transformers causal LM directory")
    judge.add_argument("--judge-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    judge.add_argument("--judge-name", help="model name to request from --judge-url (recorded)")
    judge.add_argument("--judge-key-env", default=VideoQAConfig.judge_key_env,
                       help="environment variable holding the server's API key, sent if set (default: %(default)s)")


def _reverse_args(p: argparse.ArgumentParser) -> None:
    _debug(p)
    p.add_argument("--data", help="folder of videos, or a JSONL file of {video, caption, reversed_caption, question, ...}")
    p.add_argument("--ann", help="the JSONL file (same as --data FILE)")
    p.add_argument("--data-root", help="folder the JSONL's video paths are relative to (default: the JSONL's folder)")
    p.add_argument("--out", required=True, help="folder for reverse.json, reverse.md, reverse.png")
    p.add_argument("--frames", type=int, default=ReverseConfig.frames, help="frames per video (default: %(default)s)")
    p.add_argument("--device", help="torch device (default: accelerate's choice)")
    _model_args(p, ReverseConfig)
    p.add_argument("--chat", action="store_true", help="also ask the chat model each question forwards and backwards")
    p.add_argument("--llava", help="--chat: LLaVA directory or hub id (needed when --model is a directory)")
    p.add_argument("--temporal", choices=TEMPORAL_MODES, default=ReverseConfig.temporal, help="(default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=ReverseConfig.max_new_tokens, help="(default: %(default)s)")


def _mcq_args(p: argparse.ArgumentParser) -> None:
    _debug(p)
    p.add_argument("--data", required=True, help="JSONL of {id, video, question, options, answer, kind} (see stanchat.eval.mcq)")
    p.add_argument("--data-root", help="folder the JSONL's video paths are relative to (default: the JSONL's folder)")
    p.add_argument("--out", required=True, help="folder for mcq.json, mcq.md, mcq.png, mcq_predictions.jsonl")
    p.add_argument("--model", help="chat preset (default: stanchat's default preset unless --llava and --stan are given)")
    p.add_argument("--llava", help="LLaVA directory or hub id (overrides the preset's)")
    p.add_argument("--stan", help="STAN (VideoCLIP) directory (overrides the preset's)")
    p.add_argument("--frames", type=int, default=MCQConfig.frames, help="frames per video (default: %(default)s)")
    p.add_argument("--temporal", choices=TEMPORAL_MODES, default=MCQConfig.temporal, help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=MCQConfig.batch_size, help="answers per forward pass (default: %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="model dtype (default: stanchat.load's)")
    p.add_argument("--device", help="torch device (default: CUDA when present, else CPU)")


def _config(cls, args: argparse.Namespace):
    """The task's config from the parsed options: every field the parser defines, by name."""
    values = vars(args)
    kwargs = {f.name: values[f.name] for f in fields(cls) if f.name in values and f.name != "cache_dir"}
    if values.get("no_cache"):
        kwargs["cache_dir"] = None
    elif values.get("cache_dir") is not None:
        kwargs["cache_dir"] = values["cache_dir"]
    if kwargs.get("templates") is not None:
        kwargs["templates"] = tuple(kwargs["templates"])
    elif "templates" in kwargs:
        del kwargs["templates"]
    return cls(**kwargs)


def run(args: argparse.Namespace) -> int:
    from stanchat.errors import StanchatError

    if args.task == "reverse":
        if (args.data is None) == (args.ann is None):
            raise StanchatError("pass the videos as --data DIR_OR_JSONL (or the JSONL as --ann FILE), once")
        args.data = args.data or args.ann
        cfg = _config(ReverseConfig, args)
    else:
        cfg = _config({"retrieval": RetrievalConfig, "recognition": RecognitionConfig,
                       "videoqa": VideoQAConfig, "mcq": MCQConfig}[args.task], args)
    from stanchat.eval.features import process_state
    from stanchat.eval.report import can_plot
    from stanchat.outputs import make_out_dir

    make_out_dir(cfg.out)  # before any work: a bad --out is one line, not a traceback at the end
    can_plot()  # and the warning about a missing matplotlib comes first, not after the work
    results = _runner(args.task)(cfg)
    if not process_state().is_main_process:  # under accelerate/torchrun the main process reports
        return 0
    print(summary_line(args.task, results))
    plot = f", {args.task}.png" if can_plot() else " (no plot: matplotlib is not installed)"
    print(f"wrote {cfg.out}/{args.task}.json, {args.task}.md{plot}")
    return 0


def _runner(task: str):
    if task == "retrieval":
        from stanchat.eval.retrieval import run_retrieval
        return run_retrieval
    if task == "recognition":
        from stanchat.eval.recognition import run_recognition
        return run_recognition
    if task == "videoqa":
        from stanchat.eval.videoqa import run_videoqa
        return run_videoqa
    if task == "mcq":
        from stanchat.eval.mcq import run_mcq
        return run_mcq
    from stanchat.eval.reverse import run_reverse
    return run_reverse


def summary_line(task: str, results: dict) -> str:
    """The headline numbers, one line."""
    m = results["metrics"]
    if task == "retrieval":
        parts = [f"{d}: " + " ".join(f"{k} {m[name][k]:.1f}" for k in ("R@1", "R@5", "R@10", "MdR", "MnR"))
                 for d, name in (("t2v", "text_to_video"), ("v2t", "video_to_text"))]
        return " | ".join(parts) + (" (dual softmax)" if m["dual_softmax"] else "")
    if task == "recognition":
        return f"top-1 {m['top1']:.2f} top-5 {m['top5']:.2f} mean class {m['mean_class_accuracy']:.2f}"
    if task == "videoqa":
        judged = "" if "judge_accuracy" not in m else f" judge {m['judge_accuracy']}"
        return f"exact {m['exact_match']:.2f} contains {m['contains']:.2f} ({m['answered']} answered){judged}"
    if task == "mcq":
        kinds = " ".join(f"{k} {v['accuracy']:.1f}" for k, v in m["per_kind"].items())
        return f"accuracy {m['accuracy']:.2f} ({m['questions']} questions; {kinds})"
    flips = results["captions"]
    return f"mean cosine {m['mean_cosine']:.4f}" + (f" caption flips {flips['flip_fraction']:.3f}" if flips else "")
