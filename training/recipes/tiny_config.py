"""The tiny recipe's settings: `TinyRecipe` (every size and step count), its `--set key=value`
overrides, the recipe a run folder was made with, and the triples it holds out.

Apart from the driver (`training.recipes.tiny`) so that the preset and results code can read a
run's recipe without importing the stages that train it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from stanchat.errors import StanchatError
from training.llava import LlavaTrainConfig
from training.synthworld.world import WorldConfig, holdout_combinations


@dataclass
class TinyRecipe:
    """Every size and step count of the recipe; `--set key=value` (or `llava.key=value`) overrides."""

    seed: int = 0  # data, initialisation and order of every stage
    size: int = 64  # frame and still size in pixels
    patch: int = 16  # CLIP patch size (L = (size / patch)^2 patches; 16 keeps 2 shared cores within budget)
    width: int = 128  # CLIP vision and text width
    layers: int = 6  # CLIP vision layers
    text_layers: int = 2  # CLIP text layers
    heads: int = 4  # attention heads of both towers
    projection: int = 128  # CLIP joint embedding size
    max_tokens: int = 24  # CLIP text tokens per caption
    holdout: int = 12  # (colour, shape, motion) triples kept out of every training stage
    clip_stills: int = 4000  # stage 1: still images with captions
    clip_steps: int = 2000  # stage 1: optimizer steps (600 read trails but not shapes: docs/RESULTS.md section 5)
    clip_batch: int = 48  # stage 1: stills per step
    clip_lr: float = 1e-3  # stage 1: peak lr (CLIP trained from scratch)
    videos: int = 1600  # stage 2: training clips
    video_frames: int = 16  # frames rendered per clip
    frames: int = 16  # stage 2: frames sampled per clip (also the chat's default)
    feature_layer: int = -2  # LLaVA's vision_feature_layer; stage 2's STAN ends at this layer (graft-ready)
    strategy: str = "default"  # LLaVA's vision_feature_select_strategy: default (drop the CLS) | full
    llava_holdout: bool = True  # stage 3 also never sees the held-out triples (False: only stages 1-2, CLIP and STAN, hold them out)
    stills_through_graft: bool = False  # stage 3 encodes stills with the grafted encoder (STAN at T = 1), not the bare tower
    stan_depth: int = 2  # stage 2: STAN layers, ending at LLaVA's feature layer
    time_embed_std: float = 1.0  # stage 2: init std of STAN's temporal embedding (see stage2_init)
    stan_steps: int = 500  # stage 2: optimizer steps
    stan_batch: int = 16  # stage 2: clips per step
    stan_lr: float = 5e-3  # stage 2: STAN peak lr (CLIP frozen)
    scoring: str = "mug"  # stage 2: mug | mean | mug-simple
    still_weight: float = 3.0  # stage 2: weight of the still-video loss keeping the graft's tokens image-like (training.losses.still_gap)
    reversed_negatives: bool = False  # stage 2: each caption also ranks the batch's clips played backwards
    motion_still_weight: float = 3.0  # stage 2: weight of the motion-still loss (graft tokens of a one-event clip -> tower tokens of its trail still; docs/RESULTS.md section 6)
    distractor_prob: float = 0.0  # stage 2: chance of an uncaptioned extra segment
    noise_prob: float = 0.0  # stage 2: chance of noise words in a caption
    focus_share: float = 0.5  # share of stills whose actors come from a few colours x shapes (see focus_world)
    focus_colours: int = 2  # colours of the focused share (drawn by the seed)
    focus_shapes: int = 4  # shapes of the focused share (drawn by the seed; all 4, so that stage 1 learns to tell them apart)
    video_focus_share: float = 0.5  # the same for stage 2's videos
    test_clips: int = 200  # held-out test clips written for evaluation
    qa_clips: int = 60  # held-out clips the preset's card asks about (forwards and backwards, stan and mean)
    llava: LlavaTrainConfig = field(default_factory=LlavaTrainConfig)  # stage 3

    def world(self, **changes):
        """The synthetic world at this recipe's frame size and clip length."""
        return WorldConfig(size=self.size, frames=self.video_frames, **changes)


def override(recipe: TinyRecipe, items: list[str]) -> TinyRecipe:
    """Apply `key=value` / `llava.key=value` overrides, converting to each field's type."""
    for item in items:
        key, sep, raw = item.partition("=")
        target, name = (recipe.llava, key[6:]) if key.startswith("llava.") else (recipe, key)
        fields = {f.name: f for f in dataclasses.fields(target)}
        if not sep or name not in fields or name == "llava":
            raise StanchatError(f"bad override {item!r}; valid keys: {', '.join(f.name for f in dataclasses.fields(TinyRecipe))} "
                                f"and llava.<{'|'.join(f.name for f in dataclasses.fields(LlavaTrainConfig))}>")
        kind = type(getattr(target, name))
        setattr(target, name, kind(raw) if kind is not bool else raw.lower() in ("1", "true", "yes"))
    return recipe


def read_recipe(run: Path) -> TinyRecipe:
    """The recipe a run folder was made with (its `recipe.json`, written by `run_recipe`)."""
    raw = json.loads((run / "recipe.json").read_text())
    return TinyRecipe(**{**raw, "llava": LlavaTrainConfig(**raw["llava"])})


def held_out(recipe: TinyRecipe) -> frozenset:
    """The (colour, shape, motion) triples no training stage sees."""
    return holdout_combinations(recipe.holdout, recipe.seed, recipe.world())
