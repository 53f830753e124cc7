"""`trail`: how trail-like the graft's tokens are, against the tower's tokens of trail stills."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.recipes.tiny_config import held_out, read_recipe
from training.recipes.tiny_results.common import load_preset, recipe_run
from training.synthworld import OPPOSITE, render_still, sample_specs

HELP = "how often the graft's tokens are nearer a trail still of the true motion"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="a recipe output folder (recipe.json, data/, preset/)")
    parser.add_argument("--frames", type=int, default=16, help="frames per video")
    parser.add_argument("--limit", type=int, default=0, help="at most this many clips (0: all)")


def run(args: argparse.Namespace) -> dict:
    return trail_closeness(recipe_run(args.run), args.frames, args.limit)


def trail_closeness(run: Path, frames: int, limit: int = 0) -> dict:
    """How trail-like the graft's tokens are: for each held-out moving / resizing clip of a recipe
    run `run`, is the clip's token set closer (cosine over all tokens the LLM reads) to the tower's
    tokens of a trail still of its true motion than the tokens of the same clip played backwards?
    % of clips (ties count half: frame-mean, the same both ways, scores exactly 50)."""
    import torch

    from stanchat.video import load_video

    chat, recipe = load_preset(run / "preset"), read_recipe(run)
    specs = [s for s in sample_specs(recipe.test_clips, recipe.seed + 3, recipe.world(), prefix="test",
                                     only=held_out(recipe)) if s.events[0].motion in OPPOSITE][: limit or None]
    wins = {"stan": [], "mean": []}
    for spec in specs:
        clip = load_video(str(run / "data" / "heldout" / "videos" / f"{spec.clip_id}.mp4"), frames=frames).frames
        still = chat.preprocessor([render_still(spec, recipe.world())[None]])  # (1, 1, 3, H, W)
        target = chat.graft.vision_tokens(still, "mean").flatten()  # the image's tokens as LLaVA reads them
        played = [chat.preprocessor([c]) for c in (clip, clip[::-1].copy())]  # forwards, backwards
        for temporal, won in wins.items():
            forwards, backwards = (torch.cosine_similarity(chat.graft.vision_tokens(p, temporal).flatten(), target, 0)
                                   for p in played)
            won.append(0.5 if torch.isclose(forwards, backwards, rtol=0, atol=1e-6) else float(forwards > backwards))
    return {"clips": len(specs), **{k: 100.0 * sum(v) / max(len(v), 1) for k, v in wins.items()}}
