"""`events`: many events in one clip. Held-out clips of 2, 4 and 8 events (16 frames each), one
question per event ("Which way does the cyan triangle move?", "Does the white circle grow or
shrink?": two answers each, so 50% is chance), asked of the grafted LLaVA with the whole clip
through STAN (16 frames, and as many as STAN takes), frame-mean tokens, `--temporal segments`
(one window per event) and `--select question` (the window of highest Mug weight; the other rules
of `stanchat.selection.RULES` beside it). Also the selection's hit rate: more than half of the
chosen frames show an event that answers the question as the asked one does (a clip may show the
same actor doing the same thing twice: both are right; `hit_rate_asked` counts the asked event
only), its cost per candidate frame, and how often each scorer (`stanchat.selection.SCORERS`)
puts its heaviest window on such an event."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from stanchat.options import MAX_CANDIDATES, VideoOptions
from stanchat.selection import RULES, choose, subclip, window
from training.recipes.tiny_config import TinyRecipe, held_out
from training.recipes.tiny_results.common import load_preset, preset_folder
from training.synthworld import OPPOSITE, sample_specs, write_dataset
from training.synthworld.world import MOTIONS

HELP = "accuracy and video tokens on clips of several events: stan, mean, segments, question-selected"
EVENT_FRAMES = 16  # frames of each event in the written clips


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", type=Path, default=Path("stanchat/presets/tiny"),
                        help="preset folder with llava/ and stan/ (default: the bundled tiny)")
    parser.add_argument("--out", type=Path, required=True, help="folder the held-out clips are written into (kept)")
    parser.add_argument("--events", type=int, nargs="+", default=[2, 4, 8], help="events per clip")
    parser.add_argument("--clips", type=int, default=24, help="clips per event count")
    parser.add_argument("--seed", type=int, default=7, help="seed of the clips")


def run(args: argparse.Namespace) -> dict:
    preset_folder(args.preset)  # a missing preset fails before anything is written

    chat = load_preset(args.preset)
    return {f"{events}_events": measure(chat, write_clips(args.out / f"{events}_events", events, args.clips, args.seed))
            for events in args.events}


def write_clips(root: Path, events: int, clips: int, seed: int) -> list[dict]:
    """Held-out clips of `events` events of `EVENT_FRAMES` frames each, written once under `root`,
    and their questions: [{"video", "questions": [(question, answer, event index)]}]."""


    recipe = TinyRecipe()
    world = replace(recipe.world(), frames=EVENT_FRAMES * events, segments=events,
                    motions=tuple(m for m in MOTIONS if m != "appear"))
    held = held_out(recipe)
    specs = sample_specs(clips, seed, world, prefix="test", only=held)
    if not all((root / "videos" / f"{spec.clip_id}.mp4").is_file() for spec in specs):
        write_dataset(root, "jsonl", n=clips, seed=seed, split="test", config=world, only=held)
    out = []
    for spec in specs:
        asked = []
        for k, event in enumerate(spec.events):
            actor = event.actors[0]
            if event.motion in ("grow", "shrink"):
                asked.append((f"Does the {actor.name} grow or shrink?", event.motion, k))
            elif event.motion in OPPOSITE:
                asked.append((f"Which way does the {actor.name} move?", event.motion, k))
        out.append({"video": str(root / "videos" / f"{spec.clip_id}.mp4"), "questions": asked})
    return out


def measure(chat, clips: list[dict]) -> dict:
    """Per mode: accuracy (%) and video tokens; the selection's hit rate per rule; its cost."""

    events = len(clips[0]["questions"]) if clips else 0
    all_frames = EVENT_FRAMES * events
    stan_frames = min(all_frames, chat.graft.max_frames)
    modes = {"stan_16": dict(frames=16, temporal="stan"), f"stan_{stan_frames}": dict(frames=stan_frames, temporal="stan"),
             "mean_16": dict(frames=16, temporal="mean"),
             "segments": dict(frames=stan_frames, temporal="segments", segments=events),
             "question": dict(frames=16, temporal="stan", select="question",
                              candidates=min(all_frames, MAX_CANDIDATES))}
    right = {name: [] for name in [*modes, *(f"rule_{r}" for r in RULES)]}
    tokens: dict[str, int] = {}
    hits = {rule: [] for rule in RULES}
    asked: list[bool] = []  # the chosen rule's window inside the asked event itself
    scorer_hits: dict[str, list[bool]] = {"window": [], "tower": []}
    cost = {"candidates": 0, "decode": 0.0, "score": 0.0}
    for clip in clips:
        _candidate_cost(chat, clip["video"], modes["question"], cost)
        for question, truth, event in clip["questions"]:
            for name, options in modes.items():
                answer = chat.ask(clip["video"], question, max_new_tokens=4, **options)
                right[name].append(answer.text.strip().lower() == truth)
                tokens[name] = answer.video_tokens
            answering = [k for k, (q, t, _) in enumerate(clip["questions"]) if (q, t) == (question, truth)]
            _rules(chat, clip["video"], question, truth, answering, modes["question"], right, hits)
            asked.append(_in_events(answer_indices(chat, clip["video"], question, modes["question"]), [event]))
            _scorers(chat, clip["video"], question, answering, modes["question"], scorer_hits)
    percent = lambda xs: round(100.0 * sum(xs) / max(len(xs), 1), 1)  # noqa: E731
    return {"clips": len(clips), "questions": len(right["stan_16"]),
            "accuracy": {name: percent(xs) for name, xs in right.items()},
            "video_tokens": {**tokens, **{f"rule_{r}": tokens["question"] for r in RULES}},
            "hit_rate": {rule: percent(xs) for rule, xs in hits.items()}, "hit_rate_asked": percent(asked),
            "scorer_hit_rate": {s: percent(xs) for s, xs in scorer_hits.items()},
            "ms_per_candidate": {"decode": round(1000 * cost["decode"] / max(cost["candidates"], 1), 3),
                                 "score": round(1000 * cost["score"] / max(cost["candidates"], 1), 3)}}


def _candidate_cost(chat, video: str, options: dict, cost: dict) -> None:
    """Decode and score the clip's candidates once, uncached, adding their seconds and count to `cost`."""

    chat.candidate_cache.clear()
    candidates, _, _ = chat.candidates(video, VideoOptions(**options))
    cost["candidates"] += len(candidates.clip.timestamps)
    cost["decode"] += candidates.decode_seconds
    cost["score"] += candidates.score_seconds


def _in_events(indices: list[int], events: list[int]) -> bool:
    """More than half of the chosen source frames lie in the events `events`."""
    inside = sum(any(e * EVENT_FRAMES <= i < (e + 1) * EVENT_FRAMES for e in events) for i in indices)
    return 2 * inside > len(indices)


def answer_indices(chat, video: str, question: str, options: dict) -> list[int]:
    """The source frames `--select question` hands the graft for `question`."""
    return list(chat.encode(video, VideoOptions(**options), question=question).clip.indices)


def _rules(chat, video: str, question: str, truth: str, answering: list[int], options: dict, right: dict,
           hits: dict) -> None:
    """Every selection rule on the same weights: its hit (`answering`: the events that answer the
    question as the asked one does) and the answer on its frames."""

    chosen_options = VideoOptions(**options)
    candidates, _, _ = chat.candidates(video, chosen_options)
    weights = chat.relevance.weights(question, candidates.features).tolist()
    for rule in RULES:
        clip = subclip(candidates.clip, choose(weights, chosen_options.frames, rule))
        hits[rule].append(_in_events(clip.indices, answering))
        answer = chat.ask(clip, question, temporal="stan", max_new_tokens=4)
        right[f"rule_{rule}"].append(answer.text.strip().lower() == truth)


def _scorers(chat, video: str, question: str, answering: list[int], options: dict, scorer_hits: dict) -> None:
    """Whether each scorer's heaviest window of 16 candidates lies in an event of `answering`."""

    candidates, _, _ = chat.candidates(video, VideoOptions(**options))
    for scorer in scorer_hits:
        features = chat.relevance.candidate_features(candidates.clip, scorer)
        weights = chat.relevance.weights(question, features).tolist()
        chosen = [candidates.clip.indices[i] for i in window(weights, EVENT_FRAMES)]
        scorer_hits[scorer].append(_in_events(chosen, answering))
