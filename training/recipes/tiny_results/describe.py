"""`describe`: where free descriptions go wrong, on the image path, the graft and frame-mean."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.recipes.tiny_config import held_out, read_recipe
from training.recipes.tiny_results.common import (DESCRIBE, compare_description, load_preset, one_event_world,
                                                  preset_folder, recipe_run)
from training.synthworld import caption, render_clip, render_still, sample_specs

HELP = "free descriptions of the image path (trail stills), the graft and frame-mean"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="a recipe output folder (recipe.json)")
    parser.add_argument("--preset", type=Path, help="preset folder with llava/ and stan/ (default: RUN/preset)")
    parser.add_argument("--count", type=int, default=60, help="clips of held-out and of trained triples each")


def run(args: argparse.Namespace) -> dict:
    preset = preset_folder(args.preset or recipe_run(args.run) / "preset")
    return describe_paths(recipe_run(args.run), preset, args.count)


def describe_paths(run: Path, preset: Path, count: int = 60, frames: int = 16) -> dict:
    """Where free descriptions go wrong: "What happens in this video?" for fresh one-event clips of
    held-out and of trained triples (a fixed seed), asked of the image path (the clip's trail still,
    one frame: what the LLaVA was taught on), of the graft (`stan`) and of frame-mean (`mean`) on
    the clip; % right as a whole sentence and word by word (`compare_description`)."""
    from stanchat.video.load import SampledFrames

    recipe = read_recipe(run)
    world, held, chat = one_event_world(recipe), held_out(recipe), load_preset(preset)

    def clip(pictures) -> SampledFrames:  # (T, H, W, 3) uint8 as a decoded video at the world's frame rate
        t = len(pictures)
        return SampledFrames(frames=pictures, timestamps=[i / world.fps for i in range(t)], indices=list(range(t)),
                         fps=float(world.fps), duration=t / world.fps, width=world.size, height=world.size,
                         source_frames=t, decoder="synthetic", path="synthetic")

    result = {}
    for name, split in (("heldout", {"only": held}), ("trained", {"exclude": held})):
        for spec in sample_specs(count, 777, world, prefix="describe", **split):
            truth, pictures = caption(spec, 0, noise=False), render_clip(spec, world)
            for path, video, temporal in (("still", clip(render_still(spec, world)[None]), "mean"),
                                          ("stan", clip(pictures), "stan"), ("mean", clip(pictures), "mean")):
                said = chat.ask(video, DESCRIBE, frames=frames, temporal=temporal, max_new_tokens=12).text
                for part, ok in compare_description(said, truth).items():
                    result.setdefault(f"{name}_{path}", {}).setdefault(part, []).append(ok)
    return {"count": count, **{k: {part: 100.0 * sum(v) / len(v) for part, v in parts.items()} for k, parts in result.items()}}
