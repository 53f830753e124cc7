"""`shapes`: how well a recipe run's stage-1 CLIP sees shapes, in stills and in clip frames."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.recipes.tiny_config import held_out
from training.recipes.tiny_results.common import one_event_world, stage1_encoders
from training.synthworld import SHAPES, Actor, caption, render_clip, render_still, sample_specs

HELP = "how well a run's stage-1 CLIP tells a still's shape among four captions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="a recipe output folder (recipe.json, stage1/clip)")


def run(args: argparse.Namespace) -> dict:
    return still_shapes(args.run)


def still_shapes(run: Path, count: int = 150) -> dict:
    """How well a recipe run's stage-1 CLIP sees shapes: % of one-event stills and of their clips'
    middle frames (held-out and trained triples, a fixed seed) whose image feature is closest to the
    true caption among the four that differ only in the shape. Chance 25%."""
    from dataclasses import replace

    import torch


    recipe, text, image = stage1_encoders(run)
    world, held = one_event_world(recipe), held_out(recipe)
    result = {}
    for name, split in (("heldout", {"only": held}), ("trained", {"exclude": held})):
        specs = sample_specs(count, 99, world, prefix="shape", **split)
        captions = [caption(replace(s, events=(replace(s.events[0], actors=(Actor(s.events[0].actors[0].colour, shape),)),)),
                            0, noise=False) for s in specs for shape in SHAPES]  # (N * 4,), true shape at its index
        options = text(captions).reshape(count, len(SHAPES), -1)  # (N, 4, P)
        truth = torch.tensor([SHAPES.index(s.events[0].actors[0].shape) for s in specs])
        for kind, pictures in (("still", [render_still(s, world) for s in specs]),
                               ("frame", [render_clip(s, world)[world.frames // 2] for s in specs])):
            picked = torch.einsum("np,nkp->nk", image(pictures), options).argmax(-1)  # (N,)
            result[f"{name}_{kind}"] = 100.0 * (picked == truth).float().mean().item()
    return {"count": count, **result}
