"""`stills`: how well a recipe run's stage-1 CLIP reads a trail still's direction."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.recipes.tiny_config import held_out
from training.recipes.tiny_results.common import stage1_encoders
from training.synthworld import OPPOSITE, caption, contrast_caption, render_still, sample_specs

HELP = "how well a run's stage-1 CLIP tells a still's trail from its reversed caption"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="a recipe output folder (recipe.json, stage1/clip)")


def run(args: argparse.Namespace) -> dict:
    return still_direction(args.run)


def still_direction(run: Path, count: int = 150) -> dict:
    """How well a recipe run's stage-1 CLIP reads a trail: % of one-event stills (moving or resizing;
    drawn by a fixed seed, of held-out and of trained triples) whose image feature is closer to the
    true caption than to its time-reversed twin ("moves left" vs "moves right"). Chance 50%."""

    recipe, text, image = stage1_encoders(run)
    world, held = recipe.world(), held_out(recipe)
    result = {}
    for name, split in (("heldout", {"only": held}), ("trained", {"exclude": held})):
        specs = [s for s in sample_specs(2 * count, 99, world, prefix="still", **split)
                 if len(s.events) == 1 and s.events[0].motion in OPPOSITE][:count]
        stills = image([render_still(s, world) for s in specs])
        true, twin = text([caption(s, 0, noise=False) for s in specs]), text([contrast_caption(s, 0) for s in specs])
        result[name] = 100.0 * ((stills * true).sum(-1) > (stills * twin).sum(-1)).float().mean().item()
    return {"stills": count, **result}
