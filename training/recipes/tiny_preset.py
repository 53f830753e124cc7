"""The last step of the tiny recipe: example videos, the preset directory and its card.

The preset is `llava/` (stage 3: a transformers LLaVA with its processor) and `stan/` (stage 2: a
VideoCLIP whose STAN is grafted at inference), which `stanchat.load(llava=..., stan=...)` or the
registered `tiny` preset loads. The card (`README.md`) says how it was made and what it scores,
measured here on the held-out clips with `training.recipes.tiny_results`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from training.recipes.tiny_results import ask_examples, video_qa
from training.synthworld import DIRECTIONS, Actor, ClipSpec, Event, caption, render_clip, write_video

EXAMPLE_FRAMES, EXAMPLE_FPS = 24, 8  # 3-second example clips
QUESTION = "What happens in this video?"
MANIFEST = "examples.json"  # [{"video", "question", "truth"}]: what each example shows


def example_specs(recipe, held: frozenset) -> list:
    """One held-out moving triple and one held-out growing/shrinking triple (or trained ones when
    none is held out), as one-event clip specs."""
    triples = sorted(held)
    moving = [t for t in triples if t[2] in DIRECTIONS] or [("red", "circle", "left")]
    sizing = [t for t in triples if t[2] in ("grow", "shrink")] or [("blue", "square", "grow")]
    picks = [moving[0], sizing[0]]
    return [ClipSpec(f"{c}-{s}-{m}", (Event(m, (Actor(c, s),)),), seed=recipe.seed + 100 + i)
            for i, (c, s, m) in enumerate(picks)]


def write_examples(recipe, held: frozenset, out: Path) -> list[dict]:
    """Render the example clips as mp4 into `out`; returns [{"video", "caption", "spec"}]."""
    world = recipe.world()
    world = type(world)(size=world.size, frames=EXAMPLE_FRAMES, fps=EXAMPLE_FPS)
    examples = []
    for spec in example_specs(recipe, held):
        path = out / f"{spec.clip_id}.mp4"
        write_video(path, render_clip(spec, world), world.fps)
        examples.append({"video": str(path), "caption": caption(spec, template=0), "spec": spec})
    manifest = [{"video": Path(e["video"]).name, "question": QUESTION, "truth": e["caption"]} for e in examples]
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    (out / "README.md").write_text("\n".join([
        "# Example videos",
        "",
        f"Synthetic clips ({world.size} px, {EXAMPLE_FRAMES} frames at {EXAMPLE_FPS} fps) rendered by `training.recipes.tiny`",
        "from (colour, shape, motion) triples that were held out of every stage of the bundled `tiny` model's training.",
        f"`{MANIFEST}` lists each clip with what it shows; the tests ask the bundled model about them.",
        "",
        *(f"- `{m['video']}`: {m['truth']}" for m in manifest),
        "",
        "    stanchat ask examples/" + manifest[0]["video"] + f' "{QUESTION}" --model tiny',
        "",
    ]))
    return examples


def install(preset: Path, examples: Path, repo: Path) -> None:
    """Replace the bundled preset (`stanchat/presets/tiny`) and `examples/` of the checkout `repo`."""
    target = repo / "stanchat" / "presets" / "tiny"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(preset, target)
    for file in examples.iterdir():
        shutil.copy2(file, repo / "examples" / file.name)


def assemble(recipe, llava_dir: Path, stan_dir: Path, examples: list[dict], probe: Path, out: Path,
             times: dict) -> dict:
    """Copy the stage outputs into the preset folder `out`, ask it about the examples, measure the
    held-out video QA, and write the card. Returns the summary."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(llava_dir, out / "llava")
    shutil.copytree(stan_dir, out / "stan")
    answers = ask_examples(out, examples, QUESTION, frames=recipe.frames)
    qa = {t: video_qa(out, probe, temporal=t, frames=recipe.frames, limit=recipe.qa_clips) for t in ("stan", "mean")}
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    summary = {"times": times, "size_bytes": size,
               "examples": [{k: v for k, v in a.items() if k != "spec"} for a in answers], "videoqa": qa}
    write_card(recipe, out, summary)
    return summary


def write_card(recipe, out: Path, summary: dict) -> None:
    """README.md of the preset: provenance, sizes, measured answers and scores."""
    import dataclasses

    recipe_json = ["## Recipe", "", "```json", json.dumps(dataclasses.asdict(recipe), indent=1), "```", ""]
    (out / "README.md").write_text("\n".join([*_provenance(recipe, summary), *_scores(summary), *recipe_json]))


def _provenance(recipe, summary: dict) -> list[str]:
    """The card's first part: how the preset was made, its time and size."""
    return [
        "# stanchat `tiny` preset",
        "",
        "A genuine, tiny stanchat trained end to end on CPU by stanchat's own stack on the synthetic world",
        "(`training.synthworld`), with this command:",
        "",
        f"    python -m training.recipes.tiny --out runs/tiny-recipe --seed {recipe.seed}",
        "",
        "1. CLIP (HF CLIP classes, {0} px, patch {1}, width {2}, {3} vision / {4} text layers) trained image-text".format(
            recipe.size, recipe.patch, recipe.width, recipe.layers, recipe.text_layers),
        f"   contrastively on {recipe.clip_stills} still images for {recipe.clip_steps} steps (`training.train`, task pretrain, 1 frame).",
        f"2. Mug-STAN post-pretraining ({recipe.stan_depth} STAN layers ending at LLaVA's feature layer {recipe.feature_layer},"
        f" CLIP frozen, scoring `{recipe.scoring}`,",
        f"   temporal embedding drawn at std {recipe.time_embed_std}) on {recipe.videos} synthetic videos,"
        f" {recipe.frames} frames, {recipe.stan_steps} steps.",
        "   The loss reads the tokens the graft will hand the LLM (each frame's CLIP and STAN tokens averaged, then",
        f"   CLIP's remaining layer), plus {recipe.still_weight} x the still-video loss: a clip that does not move must give",
        "   the image's own tokens (`training.losses.still_gap`).",
        *([f"   Plus {recipe.motion_still_weight} x the motion-still loss: a one-event clip's graft tokens are pulled towards",
           "   the tower's tokens of the same event drawn as a trail still (`training.losses.motion_still_gap`; the synthetic",
           "   world has such stills, real video data does not)."] if recipe.motion_still_weight else []),
        *(["   Each caption also ranks its batch's clips played backwards (`reversed_negatives`)."]
          if recipe.reversed_negatives else []),
        f"3. LLaVA (transformers classes: that CLIP tower frozen, projector, {recipe.llava.layers}-layer Llama of width"
        f" {recipe.llava.width} from scratch)",
        f"   taught on {recipe.llava.stills} still images (motion drawn as a fading trail) and questions about them,"
        f" {recipe.llava.steps} steps. Never on video.",
        "4. The graft: stage 2's STAN beside stage 3's tower. Zero-shot video chat, no video instruction tuning.",
        f"A share of the stills ({recipe.focus_share}) and videos ({recipe.video_focus_share}) show only"
        f" {recipe.focus_colours} colours x {recipe.focus_shapes} shapes",
        "(`focus_world`), so that contrastive learning needs the shape and the motion to tell captions apart.",
        "",
        f"{recipe.holdout} (colour, shape, motion) triples are held out of every stage; the scores below are on",
        "held-out clips only. Wall time on 2 shared CPU cores (s): " + ", ".join(
            f"{k} {v:.0f}" for k, v in summary["times"].items()) + f" (stages total {sum(summary['times'].values()):.0f}).",
        f"Size: {summary['size_bytes'] / 2**20:.1f} MiB.",
        "",
    ]


def _scores(summary: dict) -> list[str]:
    """The card's second part: the example answers and the held-out video QA."""
    return [
        "## Answers to the bundled examples (\"What happens in this video?\")",
        "",
        *(f"- `{Path(a['video']).name}` (truth: {a['caption']}): stan -> \"{a['stan']}\", mean -> \"{a['mean']}\""
          for a in summary["examples"]),
        "",
        "## Zero-shot video QA on held-out clips, each played forwards and backwards (exact match)",
        "",
        "A model blind to time gets at most 50%: the reversed clip needs the opposite answer.",
        "",
        "| temporal | questions | accuracy | direction | grow/shrink |",
        "|---|---|---|---|---|",
        *(f"| {t} | {q['questions']} | {q['accuracy']:.1f}% | {q['direction']:.1f}% | {q['size']:.1f}% |"
          for t, q in summary["videoqa"].items()),
        "",
        f"Direction questions: the STAN graft {summary['videoqa']['stan']['direction']:.1f}%, frame-mean"
        f" {summary['videoqa']['mean']['direction']:.1f}% (goal: graft >= 80%; see docs/RESULTS.md).",
        "",
        "Free description of the same clips (\"What happens in this video?\" against the caption or its reversed twin):",
        "",
        "| temporal | whole sentence | colour | shape | motion |",
        "|---|---|---|---|---|",
        *(f"| {t} | {q['describe_exact']:.1f}% | {q['describe_colour']:.1f}% | {q['describe_shape']:.1f}% |"
          f" {q['describe_motion']:.1f}% |" for t, q in summary["videoqa"].items()),
        "",
    ]
