"""Measurements of the tiny recipe on held-out synthetic clips (the numbers of docs/RESULTS.md).

    python -m training.recipes.tiny_results videoqa --preset DIR --probe FILE [--temporal stan|mean]
    python -m training.recipes.tiny_results contrast --model DIR --probe FILE [--scoring mug] [--frame-mean]
    python -m training.recipes.tiny_results trail --run DIR
    python -m training.recipes.tiny_results stills --run DIR
    python -m training.recipes.tiny_results shapes --run DIR
    python -m training.recipes.tiny_results describe --run DIR [--preset DIR]

`videoqa`: zero-shot QA ("Which way does the red circle move?") of the grafted LLaVA, exact match
on the synthetic world's one-word answers, each clip asked forwards and backwards.
`contrast`: a VideoCLIP (or its CLIP alone, frame features averaged: `--frame-mean`) on the
held-out probe (`probe.jsonl` written by the recipe): text-to-video R@1 over clips with distinct
captions (one clip per caption), video-to-text R@1 of every clip among the distinct captions (more
queries, so less noisy); direction accuracy: the true caption must score above its time-reversed twin ("moves
left" vs "moves right", "grows" vs "shrinks"), counted over every moving / resizing clip played
forwards and backwards (a reversed clip is a true clip of the opposite motion), so that a model
blind to time scores exactly 50% whatever its biases; and the time-reversal probe (cosine of the
clip's features played forwards and backwards, and how often the preferred caption flips).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DIRECTION_Q, SIZE_Q = "Which way does", "grow or shrink?"
DESCRIBE = "What happens in this video?"


def load_preset(preset: Path):
    """The grafted chat model of a preset folder (llava/ + stan/) on the CPU."""
    from stanchat.chat import load

    return load(llava=str(preset / "llava"), stan=str(preset / "stan"), device="cpu", dtype="float32")


def ask_examples(preset: Path, examples: list[dict], question: str, frames: int) -> list[dict]:
    """`question` about each example, with the graft and with frame-mean tokens."""
    chat = load_preset(preset)
    out = []
    for example in examples:
        answers = {t: chat.ask(example["video"], question, frames=frames, temporal=t,
                               max_new_tokens=16).text for t in ("stan", "mean")}
        out.append({**example, **answers})
    return out


def video_qa(preset: Path, probe: Path, temporal: str, frames: int, limit: int = 0) -> dict:
    """Exact-match accuracy (%) of the chat model's one-word answers to the probe's direction and
    size questions ("Which way does the red circle move?"), asked about every clip played forwards
    (truth: `answer`) and backwards (truth: `reversed_answer`), so that a model blind to time gets at
    most 50% whatever its biases; and its free description of the same clips ("What happens in this
    video?" against the caption, or its reversed twin): whole sentence, colour, shape and motion
    words (`describe_*`). `limit` > 0 caps the number of clips."""
    from dataclasses import replace

    from stanchat.video import load_video

    chat = load_preset(preset)
    items = read_probe(probe)
    items = [i for i in items if "question" in i][: limit or None]
    hits = {"direction": [], "size": []}
    described = {"exact": [], "colour": [], "shape": [], "motion": []}
    for item in items:
        clip = load_video(str(probe.parent / item["video"]), frames=frames)
        backwards = replace(clip, frames=clip.frames[::-1].copy())
        kind = "direction" if item["question"].startswith(DIRECTION_Q) else "size"
        for video, truth, caption in ((clip, item["answer"], item["caption"]),
                                      (backwards, item["reversed_answer"], item["reversed_caption"])):
            answer = chat.ask(video, item["question"], frames=frames, temporal=temporal, max_new_tokens=4).text
            hits[kind].append(answer.strip().lower() == truth)
            description = chat.ask(video, DESCRIBE, frames=frames, temporal=temporal, max_new_tokens=12).text
            for part, ok in compare_description(description, caption).items():
                described[part].append(ok)
    total = hits["direction"] + hits["size"]
    return {"clips": len(items), "questions": len(total), "accuracy": 100.0 * sum(total) / max(len(total), 1),
            **{k: 100.0 * sum(v) / max(len(v), 1) for k, v in hits.items()},
            **{f"describe_{k}": 100.0 * sum(v) / max(len(v), 1) for k, v in described.items()},
            "counts": {k: len(v) for k, v in hits.items()}}


def compare_description(description: str, caption: str) -> dict[str, bool]:
    """Which parts of a one-event caption ("a red circle moves left": article, colour, shape,
    motion words) a description gets right, and whether it is the caption exactly."""
    said, truth = description.strip().lower().split(), caption.split()
    return {"exact": said == truth, "colour": said[1:2] == truth[1:2], "shape": said[2:3] == truth[2:3],
            "motion": said[3:] == truth[3:]}


def encode_clips(model, paths: list[str], frames: int, frame_mean: bool, batch: int = 16):
    """Per-frame features of each clip played forwards and backwards: two (N, T, P) tensors.
    `frame_mean`: the CLIP tower alone on every frame (STAN off), as an image model sees a video."""
    import torch

    from stanchat.video import Preprocessor, load_video

    size = model.clip.config.vision_config.image_size
    preprocess = Preprocessor(size=size, crop_size=size)
    forward, backward = [], []
    for start in range(0, len(paths), batch):
        pixels = preprocess([load_video(p, frames=frames) for p in paths[start:start + batch]])  # (B, T, 3, H, W)
        for out, x in ((forward, pixels), (backward, pixels.flip(1))):
            with torch.no_grad():
                out.append(frame_features(model, x) if frame_mean else model.encode_video(x))
    return torch.cat(forward), torch.cat(backward)


def frame_features(model, pixels):
    """CLIP image features of every frame: (B, T, 3, H, W) -> (B, T, P)."""
    clip = model.clip
    pooled = clip.vision_model(pixel_values=pixels.flatten(0, 1)).pooler_output  # (B*T, D): post-LN CLS
    return clip.visual_projection(pooled).unflatten(0, pixels.shape[:2])  # (B*T, P) -> (B, T, P)


def read_probe(probe: Path) -> list[dict]:
    """The entries of a recipe's `probe.jsonl` (`video` relative to the file's folder, `caption`, ...)."""
    return [json.loads(line) for line in probe.read_text().splitlines() if line.strip()]


def sign_test_p(only_first: int, only_second: int) -> float:
    """Exact two-sided sign-test (McNemar) p-value of a paired split: under "no difference" each of the
    clips that only one side gets right is equally likely to be either side's."""
    from math import comb

    n, k = only_first + only_second, min(only_first, only_second)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0


def scorer(model_dir: Path, scoring: str):
    """A VideoCLIP and its `scores(texts, video (N, T, P)) -> (len(texts), N)` under `scoring`."""
    import torch

    from stanchat.videoclip import VideoCLIP
    from stanchat.videomodel import load_text_tokenizer

    model, tokenizer = VideoCLIP.from_pretrained(model_dir).eval(), load_text_tokenizer(model_dir)
    length = model.clip.config.text_config.max_position_embeddings

    def scores(texts: list[str], video: torch.Tensor) -> torch.Tensor:
        text = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        with torch.no_grad():
            tokens = model.encode_text(text["input_ids"], text["attention_mask"])
            return model.similarity(tokens, text["attention_mask"], video, mode=scoring)

    return model, scores


def caption_hits(scores, captions: list[str], distinct: list[str]):
    """(U, N) scores of the distinct captions against every clip -> (N,) bool: the clip's own caption
    (`captions[i]`) scores highest."""
    import torch

    own = torch.tensor([distinct.index(c) for c in captions])
    return scores.argmax(dim=0) == own


def contrast(model_dir: Path, probe: Path, scoring: str, frame_mean: bool, frames: int) -> dict:
    """R@1, direction accuracy and the reversal probe (all %, cosine as a number) on the probe file."""
    import torch
    import torch.nn.functional as F

    model, scores = scorer(model_dir, scoring)
    items = read_probe(probe)
    paths = [str(probe.parent / item["video"]) for item in items]
    fwd, bwd = encode_clips(model, paths, frames, frame_mean)

    n = torch.arange(len(items))
    true, flip = [i["caption"] for i in items], [i["reversed_caption"] for i in items]
    pref_fwd = scores(true, fwd)[n, n] - scores(flip, fwd)[n, n]  # (N,) > 0: the true caption wins
    pref_bwd = scores(true, bwd)[n, n] - scores(flip, bwd)[n, n]  # (N,) < 0: right for the reversed clip
    # moves and size changes played backwards are true clips of the opposite motion; "appear" is not
    exact = torch.tensor(["answer" in i for i in items])
    right = torch.cat([pref_fwd[exact] > 0, pref_bwd[exact] < 0]).float()
    distinct = list(dict.fromkeys(true))  # in first-seen order
    keep = [true.index(c) for c in distinct]  # one clip per distinct caption: its first
    against = scores(distinct, fwd)  # (U, N): every distinct caption x every clip
    ranked = against[:, keep].argmax(dim=1)  # (U,) best clip per caption, among one clip per caption
    cosine = F.cosine_similarity(fwd.mean(1), bwd.mean(1), dim=-1)
    return {"clips": len(items), "distinct_captions": len(keep), "direction_clips": int(exact.sum()),
            "r1_t2v": 100.0 * (ranked == torch.arange(len(keep))).float().mean().item(),
            "r1_v2t": 100.0 * caption_hits(against, true, distinct).float().mean().item(),
            "direction_acc": 100.0 * right.mean().item(),
            "forward_only_acc": 100.0 * (pref_fwd[exact] > 0).float().mean().item(),
            "reversal_cosine": cosine.mean().item(),
            "reversal_flip": 100.0 * ((pref_fwd > 0) != (pref_bwd > 0))[exact].float().mean().item()}


def paired_captions(first: tuple[Path, str], second: tuple[Path, str], probe: Path, frames: int) -> dict:
    """Video-to-text R@1 (`contrast`'s r1_v2t) of two (VideoCLIP directory, scoring) pairs on the same
    clips, paired: how many clips only one of them gets right, and the exact two-sided sign-test
    (McNemar) p-value of that split."""
    items = read_probe(probe)
    paths = [str(probe.parent / item["video"]) for item in items]
    captions = [item["caption"] for item in items]
    distinct = list(dict.fromkeys(captions))
    hits = []
    for model_dir, scoring in (first, second):
        model, scores = scorer(model_dir, scoring)
        hits.append(caption_hits(scores(distinct, encode_clips(model, paths, frames, False)[0]), captions, distinct))
    a, b = hits
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return {"clips": len(items), "r1_v2t_first": 100.0 * a.float().mean().item(),
            "r1_v2t_second": 100.0 * b.float().mean().item(), "both": int((a & b).sum()),
            "only_first": only_a, "only_second": only_b, "p_value": sign_test_p(only_a, only_b)}


def trail_closeness(run: Path, frames: int, limit: int = 0) -> dict:
    """How trail-like the graft's tokens are: for each held-out moving / resizing clip of a recipe
    run `run`, is the clip's token set closer (cosine over all tokens the LLM reads) to the tower's
    tokens of a trail still of its true motion than the tokens of the same clip played backwards?
    % of clips (ties count half: frame-mean, the same both ways, scores exactly 50)."""
    import torch

    from stanchat.video import load_video
    from training.recipes.tiny import held_out, read_recipe
    from training.synthworld import OPPOSITE, render_still, sample_specs

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


def stage1_encoders(run: Path):
    """A recipe run's recipe and its stage-1 CLIP as two encoders, without gradients: captions ->
    (N, P) and uint8 images (N, H, W, 3) -> (N, P), unit length (`still_direction`, `still_shapes`)."""
    import torch
    import torch.nn.functional as F
    from transformers import CLIPModel

    from stanchat.video import Preprocessor
    from stanchat.videomodel import load_text_tokenizer
    from training.recipes.tiny import read_recipe

    recipe, clip_dir = read_recipe(run), run / "stage1" / "clip"
    clip, tokenizer = CLIPModel.from_pretrained(clip_dir).eval(), load_text_tokenizer(clip_dir)
    preprocess = Preprocessor(size=recipe.size, crop_size=recipe.size)

    @torch.no_grad()
    def text(captions: list[str]) -> torch.Tensor:
        ids = tokenizer(captions, padding="max_length", max_length=recipe.max_tokens, truncation=True, return_tensors="pt")
        return F.normalize(clip.get_text_features(**ids).pooler_output, dim=-1)

    @torch.no_grad()
    def image(pictures) -> torch.Tensor:
        pixels = preprocess([p[None] for p in pictures])[:, 0]  # each picture as a one-frame clip -> (N, 3, H, W)
        return F.normalize(clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)

    return recipe, text, image


def still_direction(run: Path, count: int = 150) -> dict:
    """How well a recipe run's stage-1 CLIP reads a trail: % of one-event stills (moving or resizing;
    drawn by a fixed seed, of held-out and of trained triples) whose image feature is closer to the
    true caption than to its time-reversed twin ("moves left" vs "moves right"). Chance 50%."""
    from training.recipes.tiny import held_out
    from training.synthworld import OPPOSITE, caption, contrast_caption, render_still, sample_specs

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


def still_shapes(run: Path, count: int = 150) -> dict:
    """How well a recipe run's stage-1 CLIP sees shapes: % of one-event stills and of their clips'
    middle frames (held-out and trained triples, a fixed seed) whose image feature is closest to the
    true caption among the four that differ only in the shape. Chance 25%."""
    from dataclasses import replace

    import torch

    from training.recipes.tiny import held_out
    from training.synthworld import SHAPES, Actor, caption, render_clip, render_still, sample_specs

    recipe, text, image = stage1_encoders(run)
    world, held = _one_event_world(recipe), held_out(recipe)
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


def describe_paths(run: Path, preset: Path, count: int = 60, frames: int = 16) -> dict:
    """Where free descriptions go wrong: "What happens in this video?" for fresh one-event clips of
    held-out and of trained triples (a fixed seed), asked of the image path (the clip's trail still,
    one frame: what the LLaVA was taught on), of the graft (`stan`) and of frame-mean (`mean`) on
    the clip; % right as a whole sentence and word by word (`compare_description`)."""
    from stanchat.video.load import VideoClip
    from training.recipes.tiny import held_out, read_recipe
    from training.synthworld import caption, render_clip, render_still, sample_specs

    recipe = read_recipe(run)
    world, held, chat = _one_event_world(recipe), held_out(recipe), load_preset(preset)

    def clip(pictures) -> VideoClip:  # (T, H, W, 3) uint8 as a decoded video at the world's frame rate
        t = len(pictures)
        return VideoClip(frames=pictures, timestamps=[i / world.fps for i in range(t)], indices=list(range(t)),
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


def _one_event_world(recipe):
    """The recipe's world without "appear" (trail stills need one moving or resizing actor)."""
    return recipe.world(motions=("left", "right", "up", "down", "grow", "shrink"))


def _model_scoring(value: str) -> tuple[Path, str]:
    """"DIR:SCORING" -> (Path(DIR), SCORING) (an argparse type: a bad value is a usage error)."""
    directory, _, scoring = value.rpartition(":")
    if not directory or scoring not in ("mean", "mug", "mug-simple"):
        raise argparse.ArgumentTypeError(f"expected DIR:SCORING with scoring mean, mug or mug-simple, got {value!r}")
    return Path(directory), scoring


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.tiny_results", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    qa = sub.add_parser("videoqa", help="zero-shot video QA of a preset on held-out QA clips")
    qa.add_argument("--preset", type=Path, required=True, help="preset folder with llava/ and stan/")
    qa.add_argument("--probe", type=Path, required=True, help="probe.jsonl written by the recipe (held-out clips)")
    qa.add_argument("--temporal", default="stan", choices=["stan", "mean"], help="how frames reach the LLM")
    qa.add_argument("--frames", type=int, default=16, help="frames per video")
    qa.add_argument("--limit", type=int, default=0, help="at most this many clips (0: all)")
    con = sub.add_parser("contrast", help="R@1, direction accuracy and reversal probe of a VideoCLIP")
    con.add_argument("--model", type=Path, required=True, help="VideoCLIP directory with its tokenizer")
    con.add_argument("--probe", type=Path, required=True, help="probe.jsonl written by the recipe")
    con.add_argument("--scoring", default="mean", choices=["mean", "mug", "mug-simple"], help="text-video score")
    con.add_argument("--frame-mean", action="store_true", help="the CLIP tower alone on each frame (STAN off)")
    con.add_argument("--frames", type=int, default=16, help="frames per video")
    pair = sub.add_parser("paired", help="video-to-text R@1 of two models (or scorings) on the same clips, paired")
    pair.add_argument("--first", required=True, type=_model_scoring, metavar="DIR:SCORING", help="VideoCLIP directory and scoring, e.g. stan:mug")
    pair.add_argument("--second", required=True, type=_model_scoring, metavar="DIR:SCORING", help="the model and scoring to compare with")
    pair.add_argument("--probe", type=Path, required=True, help="probe.jsonl written by the recipe")
    pair.add_argument("--frames", type=int, default=16, help="frames per video")
    trail = sub.add_parser("trail", help="how often the graft's tokens are nearer a trail still of the true motion")
    trail.add_argument("--run", type=Path, required=True, help="a recipe output folder (recipe.json, data/, preset/)")
    trail.add_argument("--frames", type=int, default=16, help="frames per video")
    trail.add_argument("--limit", type=int, default=0, help="at most this many clips (0: all)")
    stills = sub.add_parser("stills", help="how well a run's stage-1 CLIP tells a still's trail from its reversed caption")
    stills.add_argument("--run", type=Path, required=True, help="a recipe output folder (recipe.json, stage1/clip)")
    shapes = sub.add_parser("shapes", help="how well a run's stage-1 CLIP tells a still's shape among four captions")
    shapes.add_argument("--run", type=Path, required=True, help="a recipe output folder (recipe.json, stage1/clip)")
    desc = sub.add_parser("describe", help="free descriptions of the image path (trail stills), the graft and frame-mean")
    desc.add_argument("--run", type=Path, required=True, help="a recipe output folder (recipe.json)")
    desc.add_argument("--preset", type=Path, help="preset folder with llava/ and stan/ (default: RUN/preset)")
    desc.add_argument("--count", type=int, default=60, help="clips of held-out and of trained triples each")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.command == "contrast":
        result = contrast(args.model, args.probe, args.scoring, args.frame_mean, args.frames)
    elif args.command == "stills":
        result = still_direction(args.run)
    elif args.command == "shapes":
        result = still_shapes(args.run)
    elif args.command == "describe":
        result = describe_paths(args.run, args.preset or args.run / "preset", args.count)
    elif args.command == "paired":
        result = paired_captions(args.first, args.second, args.probe, args.frames)
    elif args.command == "trail":
        result = trail_closeness(args.run, args.frames, args.limit)
    else:
        result = video_qa(args.preset, args.probe, args.temporal, args.frames, args.limit)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
