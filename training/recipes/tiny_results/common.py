"""What the tiny recipe's measurements share: the models they load (`load_preset`, `scorer`), the
probe file, the clips' features, the description check and the sign test; and the one-line
checks of their inputs (a missing file or run folder is a `StanchatError`: exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

from stanchat.errors import StanchatError
from training.recipes.tiny_config import read_recipe

DIRECTION_Q, SIZE_Q = "Which way does", "grow or shrink?"
DESCRIBE = "What happens in this video?"


def existing(path: Path, what: str) -> Path:
    """`path` if it exists, else one line naming what was expected there."""
    if not path.exists():
        raise StanchatError(f"{path} does not exist; pass {what}")
    return path


def recipe_run(run: Path) -> Path:
    """`run` if it is a recipe output folder (it holds the recipe.json `python -m training.recipes.tiny` writes)."""
    existing(run / "recipe.json", "--run: a folder written by `python -m training.recipes.tiny` (it holds recipe.json)")
    return run


def preset_folder(preset: Path) -> Path:
    """`preset` if it holds llava/ and stan/."""
    for part in ("llava", "stan"):
        existing(preset / part, "--preset: a preset folder with llava/ and stan/ (e.g. stanchat/presets/tiny)")
    return preset


def load_preset(preset: Path):
    """The grafted chat model of a preset folder (llava/ + stan/) on the CPU."""
    from stanchat.chat import load

    return load(llava=str(preset / "llava"), stan=str(preset / "stan"), device="cpu", dtype="float32")


def read_probe(probe: Path) -> list[dict]:
    """The entries of a recipe's `probe.jsonl` (`video` relative to the file's folder, `caption`, ...)."""
    existing(probe, "--probe: the probe.jsonl a recipe run writes (RUN/data/heldout/probe.jsonl)")
    return [json.loads(line) for line in probe.read_text().splitlines() if line.strip()]


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

    size = model.image_size
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


def scorer(model_dir: Path, scoring: str):
    """A saved video-text model (by the common loader) and its `scores(texts, video (N, T, P)) -> (len(texts), N)` under `scoring`."""
    import torch

    from stanchat.architectures import load_video_model
    from stanchat.videomodel import load_text_tokenizer

    model, tokenizer = load_video_model(existing(model_dir, "a VideoCLIP directory")).eval(), load_text_tokenizer(model_dir)
    length = model.text_length

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


def sign_test_p(only_first: int, only_second: int) -> float:
    """Exact two-sided sign-test (McNemar) p-value of a paired split: under "no difference" each of the
    clips that only one side gets right is equally likely to be either side's."""
    from math import comb

    n, k = only_first + only_second, min(only_first, only_second)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0


def stage1_encoders(run: Path):
    """A recipe run's recipe and its stage-1 CLIP as two encoders, without gradients: captions ->
    (N, P) and uint8 images (N, H, W, 3) -> (N, P), unit length (`still_direction`, `still_shapes`)."""
    import torch
    import torch.nn.functional as F
    from transformers import CLIPModel

    from stanchat.video import Preprocessor
    from stanchat.videomodel import load_text_tokenizer

    recipe, clip_dir = read_recipe(recipe_run(run)), existing(run / "stage1" / "clip", "--run: a recipe run with stage1/clip")
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


def one_event_world(recipe):
    """The recipe's world without "appear" (trail stills need one moving or resizing actor)."""
    return recipe.world(motions=("left", "right", "up", "down", "grow", "shrink"))
