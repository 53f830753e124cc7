"""The bundled `tiny` stanchat, trained end to end by stanchat's own stack on the synthetic world:

    python -m training.recipes.tiny --out runs/tiny-recipe [--seed 0] [--set key=value ...]

1. a tiny CLIP (HF CLIP classes, 64 px, patch 16) trained image-text contrastively on still images
   (`training.train`, task `pretrain`, one frame per sample);
2. Mug-STAN post-pretraining on synthetic videos in the graft-ready setting: the CLIP frozen, the
   STAN ending at LLaVA's feature layer (`model.stan.end_layer=-2`), Mug scoring (`training.train`);
   the loss reads the graft's own tokens, a still-video loss keeps them image-like (`still_weight`), and a
   motion-still loss pulls a one-event clip's tokens towards the tower's tokens of the same event drawn as
   a trail still (`motion_still_weight`: how stage 3 learns motion words, so the LLM reads the graft);
3. a tiny LLaVA (that CLIP tower frozen, a projector, a small Llama from scratch) taught on still
   images and conversations about them, never on video (`training.llava`);
4. the graft: stage 2's STAN beside stage 3's tower, zero-shot video chat. The preset directory
   `OUT/preset` (llava/, stan/, README.md) and example videos `OUT/examples` are written last.

Everything is drawn from `--seed`; (colour, shape, motion) triples chosen by the seed are held out
of every training stage and are the only content of the held-out test clips.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from stanchat.errors import StanchatError
from training.recipes.tiny_config import TinyRecipe, held_out, override, read_recipe
from training.recipes.tiny_preset import assemble, install, write_examples

__all__ = ["TinyRecipe", "held_out", "main", "override", "read_recipe", "run_recipe"]  # the settings live in tiny_config

logger = logging.getLogger("training.recipes.tiny")


DATA_FIELDS = ("seed", "size", "holdout", "clip_stills", "videos", "video_frames", "distractor_prob", "noise_prob",
               "focus_share", "focus_colours", "focus_shapes", "video_focus_share", "test_clips")  # what the written data depends on
DATA_VERSION = 2  # bumped when write_data writes something new for the same settings (2: stage 2's trail stills)


def write_data(recipe: TinyRecipe, out: Path) -> dict[str, Path]:
    """Stage 1 stills, stage 2 training clips and held-out test clips (jsonl + PNG / mp4). Data
    written before by the same settings (`data/settings.json`) is reused: it is a pure function of them."""
    from training.synthworld import write_dataset

    held, data = held_out(recipe), out / "data"
    names = ("stills", "videos", "heldout", "heldout-qa", "heldout-misaligned")
    settings = json.dumps({"version": DATA_VERSION, **{k: getattr(recipe, k) for k in DATA_FIELDS}}, sort_keys=True)
    if (data / "settings.json").is_file() and (data / "settings.json").read_text() == settings:
        logger.info("reusing the data in %s", data)
        write_probe(recipe, held, data / "heldout")
        write_misaligned(recipe, held, data / "heldout-misaligned")
        return {name: data / name for name in names}
    shutil.rmtree(data, ignore_errors=True)
    noise = dict(distractor_prob=recipe.distractor_prob, noise_prob=recipe.noise_prob)
    for name, n, seed, stills, world, share in (
            ("stills", recipe.clip_stills, recipe.seed + 1, True, recipe.world(), recipe.focus_share),
            ("videos", recipe.videos, recipe.seed + 2, False, recipe.world(**noise), recipe.video_focus_share)):
        focused, kinds = round(n * share), dict(stills=stills, motion_stills=not stills)  # videos: with trail stills
        if n > focused:
            write_dataset(data / name, "jsonl", n=n - focused, seed=seed, split="train", config=world, exclude=held, **kinds)
        else:
            (data / name).mkdir(parents=True, exist_ok=True)
            (data / name / "train.jsonl").write_text("")
        if focused:  # written under <name>/focus/, its entries appended to <name>/train.jsonl
            part = write_dataset(data / name / "focus", "jsonl", n=focused, seed=seed + 10, split="train",
                                 config=focus_world(recipe, world), exclude=held, **kinds)
            entries = [json.loads(line) for line in part.ann.read_text().splitlines()]
            with (data / name / "train.jsonl").open("a") as f:
                for entry in entries:
                    paths = {key: f"focus/{entry[key]}" for key in ("image", "video", "still") if key in entry}
                    f.write(json.dumps({**entry, **paths}) + "\n")
    for name, task in (("heldout", "retrieval"), ("heldout-qa", "qa")):  # the same clips, captioned / asked about
        write_dataset(data / name, "jsonl", n=recipe.test_clips, seed=recipe.seed + 3, split="test",
                      config=recipe.world(), task=task, only=held)
    write_probe(recipe, held, data / "heldout")
    write_misaligned(recipe, held, data / "heldout-misaligned")
    (data / "settings.json").write_text(settings)
    return {name: data / name for name in names}


def focus_world(recipe: TinyRecipe, world):
    """`world` narrowed to a few colours x shapes (drawn by the seed) and one-actor motions. Contrastive
    learning is lazy: in a batch of random clips colour and shape already tell the captions apart,
    so nothing asks for direction. Among clips of the same few actors only the motion does, so the
    focused share of the data is where the towers learn to read a trail (stage 1) and time (stage 2)."""
    import numpy as np

    rng = np.random.default_rng(recipe.seed)
    colours = tuple(sorted(str(c) for c in rng.choice(world.colours, size=recipe.focus_colours, replace=False)))
    shapes = tuple(sorted(str(s) for s in rng.choice(world.shapes, size=recipe.focus_shapes, replace=False)))
    return dataclasses.replace(world, colours=colours, shapes=shapes,
                               motions=tuple(m for m in world.motions if m != "appear"))


def write_misaligned(recipe: TinyRecipe, held: frozenset, root: Path) -> Path:
    """Held-out test clips that each also hold an uncaptioned distractor segment (first or last, of
    a trained triple) besides their captioned held-out event, with their probe: the test where a
    scorer that picks the caption's frames (Mug) should beat frame averaging. Written once."""
    from training.synthworld import write_dataset

    world, seed = recipe.world(distractor_prob=1.0), recipe.seed + 5
    if not (root / "probe.jsonl").is_file():
        write_dataset(root, "jsonl", n=recipe.test_clips, seed=seed, split="test", config=world, task="retrieval",
                      only=held)
        write_probe(recipe, held, root, world, seed)
    return root


def write_probe(recipe: TinyRecipe, held: frozenset, root: Path, world=None, seed: int | None = None) -> Path:
    """`root/probe.jsonl` for the held-out clips (the specs `write_data` rendered from `world` and
    `seed`, by default the recipe's world and seed + 3): the caption (template 0, no noise), its
    time-reversed twin, and a direction / size question with the answer for each playing direction
    (the format of `stanchat eval reverse`)."""
    from training.synthworld import OPPOSITE, caption, contrast_caption, qa_pairs, sample_specs

    lines = []
    seed = recipe.seed + 3 if seed is None else seed
    for spec in sample_specs(recipe.test_clips, seed, world or recipe.world(), prefix="test", only=held):
        item = {"video": f"videos/{spec.clip_id}.mp4", "caption": caption(spec, 0, noise=False),
                "reversed_caption": contrast_caption(spec, 0)}
        asked = [(q, a) for q, a in qa_pairs(spec) if a in OPPOSITE]  # which way / grow or shrink
        if asked:
            item.update(question=asked[0][0], answer=asked[0][1], reversed_answer=OPPOSITE[asked[0][1]])
        lines.append(json.dumps(item))
    (root / "probe.jsonl").write_text("\n".join(lines) + "\n")
    return root / "probe.jsonl"


def write_backbone(recipe: TinyRecipe, directory: Path) -> Path:
    """A randomly initialised CLIP of the recipe's size with the synthetic world's word tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from training.tiny_backbone import tiny_tokenizer

    tokenizer = tiny_tokenizer(recipe.max_tokens)
    text = dict(vocab_size=len(tokenizer), hidden_size=recipe.width, intermediate_size=4 * recipe.width,
                num_hidden_layers=recipe.text_layers, num_attention_heads=recipe.heads,
                max_position_embeddings=recipe.max_tokens, projection_dim=recipe.projection,
                pad_token_id=0, bos_token_id=2, eos_token_id=3)  # eos != 2: HF pools at the first EOS
    vision = dict(hidden_size=recipe.width, intermediate_size=4 * recipe.width, num_hidden_layers=recipe.layers,
                  num_attention_heads=recipe.heads, image_size=recipe.size, patch_size=recipe.patch,
                  projection_dim=recipe.projection)
    torch.manual_seed(recipe.seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=recipe.projection)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def run_training(args: list[str]) -> Path:
    """`training.train.main` with these overrides; returns the newest checkpoint directory."""
    from training import checkpoint
    from training.train import main

    code = main(["run.progress=false", "run.keep_last=1", "run.overwrite=true", "data.num_workers=0", "run.cpu=true", *args])
    if code != 0:
        raise StanchatError(f"training.train failed (exit {code}) with {' '.join(args)}")
    out = next(a.split("=", 1)[1] for a in args if a.startswith("run.output_dir="))
    return checkpoint.list_checkpoints(out)[-1]


def stage1_clip(recipe: TinyRecipe, data: Path, out: Path) -> Path:
    """Image-text contrastive training of the CLIP on stills (one frame per sample). The run's
    video model has a one-layer STAN riding on the last layer; only its CLIP is kept."""
    from stanchat.videoclip import VideoCLIP
    from stanchat.videomodel import load_text_tokenizer

    backbone = write_backbone(recipe, out / "backbone")
    ckpt = run_training([
        "task=pretrain", f"model.clip={backbone}", "model.stan.depth=1", "model.stan.end_layer=-1",
        "model.stan.drop_path_rate=0.0", "model.scoring=mean", "data.dataset=jsonl", f"data.root={data}",
        "data.frames=1", f"data.max_tokens={recipe.max_tokens}", f"data.batch_size={recipe.clip_batch}",
        f"optim.clip_lr={recipe.clip_lr}", f"optim.stan_lr={recipe.clip_lr}", "optim.weight_decay=0.05",
        f"schedule.steps={recipe.clip_steps}", f"run.seed={recipe.seed}", f"run.output_dir={out / 'run'}",
        f"run.save_every={recipe.clip_steps}", "run.val_every=0", "run.log_every=25",
    ])
    clip_dir = out / "clip"
    VideoCLIP.from_pretrained(ckpt).clip.save_pretrained(clip_dir)
    load_text_tokenizer(ckpt).save_pretrained(clip_dir)
    return clip_dir


def stage2_init(recipe: TinyRecipe, clip_dir: Path, out: Path) -> Path:
    """The VideoCLIP stage 2 starts from: a fresh STAN on the CLIP, its temporal embedding drawn at
    `time_embed_std`. STAN's default (std 0.02) suits towers whose training runs long; this tiny
    CLIP's hidden states reach norm ~25 by the layers STAN reads, so a 0.02 time signal drowns and
    a few hundred steps never learn which way time runs."""
    import torch
    from transformers import CLIPModel

    from stanchat.stan import STANConfig
    from stanchat.videoclip import VideoCLIP
    from stanchat.videomodel import load_text_tokenizer

    stan = STANConfig(depth=recipe.stan_depth, end_layer=recipe.feature_layer)
    torch.manual_seed(recipe.seed)
    model = VideoCLIP.from_clip(CLIPModel.from_pretrained(str(clip_dir)), stan, source=str(clip_dir))
    torch.nn.init.normal_(model.stan.time_embed.weight, std=recipe.time_embed_std)
    model.save_pretrained(out)
    load_text_tokenizer(clip_dir).save_pretrained(out)
    return out


def stage2_stan(recipe: TinyRecipe, clip_dir: Path, data: Path, out: Path, scoring: str | None = None) -> Path:
    """Mug-STAN post-pretraining on videos, graft-ready: CLIP frozen, STAN ending at LLaVA's feature
    layer (`STANConfig.end_layer` and `vision_feature_layer` count layers the same way: -2 -> M-2)."""
    init = stage2_init(recipe, clip_dir, out / "init")
    ckpt = run_training([
        "task=pretrain", f"model.clip={clip_dir}", f"model.pretrained={init}", "model.freeze_clip=true",
        f"model.scoring={scoring or recipe.scoring}", f"model.still_weight={recipe.still_weight}",
        f"model.reversed_negatives={str(recipe.reversed_negatives).lower()}",
        f"model.motion_still_weight={recipe.motion_still_weight}",
        "data.dataset=jsonl", f"data.root={data}", f"data.frames={recipe.frames}",
        f"data.max_tokens={recipe.max_tokens}", f"data.batch_size={recipe.stan_batch}",
        f"optim.stan_lr={recipe.stan_lr}", "optim.weight_decay=0.05", f"schedule.steps={recipe.stan_steps}",
        f"run.seed={recipe.seed}", f"run.output_dir={out / 'run'}", f"run.save_every={recipe.stan_steps}",
        "run.val_every=0", "run.log_every=10",
    ])
    stan_dir = out / "stan"
    shutil.rmtree(stan_dir, ignore_errors=True)
    stan_dir.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        if (ckpt / name).is_file():
            shutil.copy2(ckpt / name, stan_dir / name)
    return stan_dir


def stage3_llava(recipe: TinyRecipe, clip_dir: Path, out: Path, stan_dir: Path | None = None) -> Path:
    """The image-only LLaVA on stills (of the non-held-out triples when `recipe.llava_holdout`; encoded
    through the grafted encoder when `recipe.stills_through_graft`)."""
    from training.llava import train_llava
    from training.synthworld import sample_specs

    world = recipe.world(motions=("left", "right", "up", "down", "grow", "shrink"))
    held = held_out(recipe) if recipe.llava_holdout else frozenset()
    specs = sample_specs(recipe.llava.stills, recipe.seed + 4, world, prefix="still", exclude=held)
    return train_llava(clip_dir, out, specs, world, recipe.llava, recipe.feature_layer, recipe.strategy,
                       stan_dir if recipe.stills_through_graft else None)


STAGES = ("data", "stage1", "stage2", "stage3")


def run_recipe(recipe: TinyRecipe, out: Path, clip: Path | None = None, stop_after: str = "stage3") -> dict:
    """All stages into `out` (stage 1 skipped when `clip` is given; nothing after `stop_after`);
    returns the timings and, after stage 3, the preset's measured answers."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(dataclasses.asdict(recipe), indent=1))
    times, start = {}, time.perf_counter()

    def lap(name: str) -> None:
        times[name] = time.perf_counter() - start - sum(times.values())

    data = write_data(recipe, out)
    lap("data")
    summary: dict = {"times": times}
    if stop_after != "data":
        clip_dir = clip or stage1_clip(recipe, data["stills"], out / "stage1")
        lap("stage1_clip")
    if stop_after not in ("data", "stage1"):
        stan_dir = stage2_stan(recipe, clip_dir, data["videos"], out / "stage2")
        lap("stage2_stan")
    if stop_after == "stage3":
        llava_dir = stage3_llava(recipe, clip_dir, out / "stage3" / "llava", stan_dir)
        lap("stage3_llava")
        examples = write_examples(recipe, held_out(recipe), out / "examples")
        summary = assemble(recipe, llava_dir, stan_dir, examples, data["heldout"] / "probe.jsonl", out / "preset", times)
    summary["times"] = {k: round(v, 1) for k, v in summary["times"].items()}
    summary["times"]["total"] = round(time.perf_counter() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 on success, 2 on a user error reported as one line."""
    parser = argparse.ArgumentParser(prog="python -m training.recipes.tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for data, stage outputs and the preset")
    parser.add_argument("--seed", type=int, default=TinyRecipe.seed, help="seed of every stage")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides, e.g. clip_steps=10")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on 2 cores shared with other work, 2 threads ran 6x slower)")
    parser.add_argument("--clip", type=Path, help="skip stage 1 and use this CLIP directory (e.g. OUT/stage1/clip of a run)")
    parser.add_argument("--stop-after", choices=STAGES, default="stage3", help="last stage to run (stage3: also the preset)")
    parser.add_argument("--install", action="store_true",
                        help="copy the preset into stanchat/presets/tiny and the examples into examples/ of this checkout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch

    torch.set_num_threads(args.threads)
    try:
        recipe = override(TinyRecipe(seed=args.seed), args.set)
        recipe.llava.seed = recipe.seed
        summary = run_recipe(recipe, args.out, args.clip, args.stop_after)
        if args.install:
            install(args.out / "preset", args.out / "examples", Path(__file__).resolve().parents[2])
    except StanchatError as err:
        print(f"recipe: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
