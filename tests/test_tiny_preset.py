"""The bundled `tiny` preset: shipped inside the package, loaded by name, and answering the bundled
example videos correctly (it was trained by `python -m training.recipes.tiny`; see its card)."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

from stanchat.cli import main
from stanchat.pretrained import get_preset, resolve

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


@pytest.mark.parametrize("example", MANIFEST, ids=[m["video"] for m in MANIFEST])
def test_ask_answers_the_bundled_examples(example, capsys):
    video = EXAMPLES / example["video"]
    assert main(["ask", str(video), example["question"], "--model", "tiny", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["answer"] == example["truth"]
    assert answer["model"] == "tiny" and answer["temporal"] == "stan"


def test_ask_runs_on_a_real_clip(capsys):
    """Real footage is far outside the synthetic world: the answer is only required to exist."""
    assert main(["ask", str(REAL_CLIP), "What happens in this video?", "--model", "tiny"]) == 0
    assert capsys.readouterr().out.strip()
