"""Write a synthetic dataset: `python -m training.synthworld --out DIR --format FORMAT --n N --seed S`.

`--format all` writes every registered format, each in `DIR/<format>/`; `--format mcq` writes the
temporal multiple-choice set (`training.synthworld.mcq`: questions.jsonl and a local lmms-eval task). With `--holdout K`,
K (colour, shape, motion) triples chosen by `--holdout-seed` are kept out of `--side train`
clips and are the only captioned content of `--side test` clips.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stanchat.errors import StanchatError
from training.synthworld.formats import WRITERS, write_dataset
from training.synthworld.shards import write_shards
from training.synthworld.world import MOTIONS, WorldConfig, holdout_combinations


def build_parser() -> argparse.ArgumentParser:
    defaults = WorldConfig()
    p = argparse.ArgumentParser(prog="python -m training.synthworld", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="data root to write into")
    p.add_argument("--format", required=True, choices=[*WRITERS, "webdataset", "mcq", "all"],
                   help="dataset format (webdataset: tar shards in video2dataset's layout, SPLIT/00000.tar; mcq: the "
                        "temporal multiple-choice set with its lmms-eval task)")
    p.add_argument("--n", type=int, default=16, help="number of clips")
    p.add_argument("--seed", type=int, default=0, help="seed of the clip specs")
    p.add_argument("--split", help="split to write (default: the format's evaluation split)")
    p.add_argument("--task", choices=["retrieval", "recognition", "qa"], help="task of jsonl/csv/webdataset data")
    p.add_argument("--stills", action="store_true", help="jsonl/csv only: PNG stills with a motion trail")
    p.add_argument("--motion-stills", action="store_true",
                   help="jsonl/csv retrieval only: videos, and beside each one-event clip its trail still (field `still`)")
    p.add_argument("--shard-size", type=int, default=8, help="webdataset only: samples per tar shard")
    p.add_argument("--missing", type=int, default=0, help="annotate this many clips without writing their files")
    p.add_argument("--size", type=int, default=defaults.size, help="frame size in pixels")
    p.add_argument("--frames", type=int, default=defaults.frames, help="frames per clip")
    p.add_argument("--fps", type=int, default=defaults.fps, help="frame rate of the videos")
    p.add_argument("--motions", default=",".join(defaults.motions), help=f"comma list from {','.join(MOTIONS)}")
    p.add_argument("--segments", type=int, default=defaults.segments, help="captioned events per clip")
    p.add_argument("--distractor-prob", type=float, default=defaults.distractor_prob,
                   help="chance of an extra uncaptioned segment")
    p.add_argument("--noise-prob", type=float, default=defaults.noise_prob, help="chance of caption noise words")
    p.add_argument("--holdout", type=int, default=0, help="number of (colour, shape, motion) triples held out")
    p.add_argument("--holdout-seed", type=int, default=0, help="seed choosing the held-out triples")
    p.add_argument("--side", choices=["train", "test"], default="train", help="which side of the held-out split")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = WorldConfig(size=args.size, frames=args.frames, fps=args.fps, motions=tuple(args.motions.split(",")),
                             segments=args.segments, distractor_prob=args.distractor_prob, noise_prob=args.noise_prob)
        held = holdout_combinations(args.holdout, args.holdout_seed, config) if args.holdout else frozenset()
        exclude, only = (held, None) if args.side == "train" else (frozenset(), held or None)
        if args.format == "mcq":
            from training.synthworld.mcq import write_mcq

            start = time.perf_counter()
            out = write_mcq(args.out, n=args.n, seed=args.seed, config=config, exclude=exclude, only=only)
            print(f"mcq: {len(out.items)} questions in {out.questions}, lmms-eval tasks {', '.join(out.tasks)} "
                  f"({time.perf_counter() - start:.1f} s)")
            return 0
        if args.format == "webdataset":
            start = time.perf_counter()
            out = write_shards(args.out, n=args.n, seed=args.seed, split=args.split or "train",
                               shard_size=args.shard_size, config=config, exclude=exclude, only=only,
                               task=args.task or "retrieval")
            print(f"webdataset: {len(out.keys)} samples in {len(out.shards)} shards under {args.out / out.split} "
                  f"({time.perf_counter() - start:.1f} s)")
            return 0
        formats = list(WRITERS) if args.format == "all" else [args.format]
        for name in formats:
            root = args.out / name if args.format == "all" else args.out
            start = time.perf_counter()
            out = write_dataset(root, name, n=args.n, seed=args.seed, split=args.split, config=config, task=args.task,
                                stills=args.stills, missing=args.missing, exclude=exclude, only=only,
                                motion_stills=args.motion_stills)
            print(f"{name}: {len(out.files)} files + {out.ann.relative_to(root)} in {root} "
                  f"({len(out.missing)} left missing, {time.perf_counter() - start:.1f} s)")
    except StanchatError as err:
        print(f"synthworld: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
