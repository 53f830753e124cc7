"""The bundled `tiny` preset: shipped inside the package, loaded by name, and answering the bundled
example videos correctly (it was trained by `python -m training.recipes.tiny`; see its card)."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

from stanchat.cli import main
from stanchat.pretrained import get_preset, resolve
from training.synthworld import COLOURS, DIRECTIONS, OPPOSITE, SHAPES

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
MANIFEST = json.loads((EXAMPLES / "examples.json").read_text())
REAL_CLIP = REPO / "tests" / "data" / "videos" / "yoga.mp4"
PRESET = Path(str(files("stanchat") / "presets" / "tiny"))


def test_the_preset_lives_in_the_package_and_is_small():
    spec = resolve("tiny")
    assert get_preset("tiny").bundled
    assert Path(spec.llava) == PRESET / "llava" and spec.stan == PRESET / "stan"
    weights = sum(f.stat().st_size for f in PRESET.rglob("*") if f.is_file())
    assert weights <= 30 * 2**20
    assert "training.recipes.tiny" in (PRESET / "README.md").read_text()


def test_package_data_covers_every_preset_file():
    """A non-editable `pip install .` copies only files matching pyproject's package-data globs."""
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["stanchat"]
    package = REPO / "stanchat"
    shipped = [f.relative_to(package).as_posix() for f in (package / "presets").rglob("*") if f.is_file()]
    assert shipped and all(any(fnmatch.fnmatch(name, g) for g in globs) for name in shipped), shipped


# what the world's "What happens" answers look like: "a blue triangle moves left", "an orange square grows"
SENTENCE = re.compile(rf"^an? ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) (moves ({'|'.join(DIRECTIONS)})|grows|shrinks)$")


@pytest.mark.parametrize("example", MANIFEST, ids=[m["video"] for m in MANIFEST])
def test_ask_answers_the_bundled_examples_in_the_worlds_language(example, capsys):
    """The trained LLM answers with a sentence of the synthetic world (a random one would not)."""
    assert main(["ask", str(EXAMPLES / example["video"]), example["question"], "--model", "tiny", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert SENTENCE.match(answer["answer"]), answer["answer"]
    assert answer["model"] == "tiny" and answer["temporal"] == "stan"


@pytest.mark.parametrize("example", MANIFEST, ids=[m["video"] for m in MANIFEST])
def test_ask_describes_the_bundled_examples_correctly(example, capsys):
    """The README's first command, word for word: the graft describes the held-out example right."""
    assert main(["ask", str(EXAMPLES / example["video"]), example["question"], "--model", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == example["truth"]


@pytest.mark.parametrize("example", MANIFEST, ids=[m["video"] for m in MANIFEST])
def test_the_bundled_stan_tells_which_way_time_runs(example):
    """The preset's VideoCLIP prefers the true caption over its time-reversed twin, and the twin
    once the clip is played backwards; the CLIP tower alone (frame-mean) cannot tell them apart."""
    import torch

    from stanchat.video import Preprocessor, load_video
    from stanchat.videoclip import VideoCLIP
    from stanchat.videomodel import load_text_tokenizer
    from training.recipes.tiny_results import frame_features

    model, tokenizer = VideoCLIP.from_pretrained(PRESET / "stan").eval(), load_text_tokenizer(PRESET / "stan")
    *subject, motion = example["truth"].rsplit(" ", 1)
    words = {"left": "right", "right": "left", "up": "down", "down": "up", "grows": "shrinks", "shrinks": "grows"}
    captions = [example["truth"], " ".join([*subject, words[motion]])]
    text = tokenizer(captions, padding="max_length", max_length=model.clip.config.text_config.max_position_embeddings,
                     return_tensors="pt")
    pixels = Preprocessor(size=64, crop_size=64)(load_video(EXAMPLES / example["video"], frames=16))  # (1, T, 3, H, W)
    with torch.no_grad():
        tokens = model.encode_text(text["input_ids"], text["attention_mask"])
        forward = model.similarity(tokens, text["attention_mask"], model.encode_video(pixels))[:, 0]
        backward = model.similarity(tokens, text["attention_mask"], model.encode_video(pixels.flip(1)))[:, 0]
        blind = [model.similarity(tokens, text["attention_mask"], frame_features(model, x))[:, 0]
                 for x in (pixels, pixels.flip(1))]
    assert forward[0] > forward[1] and backward[1] > backward[0]
    assert torch.allclose(*blind, atol=1e-5)


def test_ask_runs_on_a_real_clip(capsys):
    """Real footage is far outside the synthetic world: the answer is only required to exist."""
    assert main(["ask", str(REAL_CLIP), "What happens in this video?", "--model", "tiny"]) == 0
    assert capsys.readouterr().out.strip()


def motion_question(truth: str) -> tuple[str, list[str]]:
    """The world's question about a one-event caption and its answers played forwards, then backwards:
    "a blue triangle moves left" -> ("Which way does the blue triangle move?", ["left", "right"])."""
    _, colour, shape, verb, *rest = truth.split()
    if verb == "moves":
        return f"Which way does the {colour} {shape} move?", [rest[0], OPPOSITE[rest[0]]]
    return f"Does the {colour} {shape} grow or shrink?", [verb[:-1], OPPOSITE[verb[:-1]]]


@pytest.mark.parametrize("example", MANIFEST, ids=[m["video"] for m in MANIFEST])
def test_the_graft_answers_both_ways_where_frame_mean_cannot(example):
    """Asked about an example played forwards and then backwards, the graft gives the true answer each
    time; frame-mean tokens are the same both ways, so its answer cannot change."""
    from dataclasses import replace

    from stanchat.chat import load
    from stanchat.video import load_video

    chat = load("tiny", device="cpu")
    clip = load_video(str(EXAMPLES / example["video"]), frames=16)
    backwards = replace(clip, frames=clip.frames[::-1].copy())
    question, truth = motion_question(example["truth"])
    assert [chat.ask(v, question, temporal="stan").text for v in (clip, backwards)] == truth
    mean = [chat.ask(v, question, temporal="mean").text for v in (clip, backwards)]
    assert mean[0] == mean[1]
