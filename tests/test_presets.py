"""The preset registry and what `stanchat models` and the README say about it, tied to the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stanchat.fetch import size_text
from stanchat.pretrained import PRESETS, get_preset
from stanchat.stan import STANConfig, end_layer_for_feature_layer
from tests.hub_cache import use_cache

REPO, FILE, V1_REPO = "farewellthree/Mug_STAN_Weight", "Mug-StanL14.bin", "mmaaz60/LLaVA-7B-Lightening-v1-1"
L14_LAYERS, FEATURE_LAYER = 24, -2  # CLIP-L/14's tower depth; the vision_feature_layer every preset's LLaVA reads
README = Path(__file__).parents[1] / "README.md"


def span(layers: range) -> str:
    return f"{layers[0]}-{layers[-1]}"


def test_the_layer_numbers_in_presets_models_and_readme_are_the_codes(tmp_path, monkeypatch):
    """The released STAN (the paper's K, ending at the tower's last layer) and the graft (ending at
    LLaVA's feature layer) pair with the layers `STANConfig.paired_layers` gives; every range of
    layers the presets, `stanchat models` and the README's models section name is one of those two."""
    from stanchat.commands.models import _text, status

    use_cache(monkeypatch, tmp_path / "hub")
    monkeypatch.setenv("STANCHAT_HOME", str(tmp_path / "home"))
    end = end_layer_for_feature_layer(FEATURE_LAYER, L14_LAYERS)
    trained, grafted = (span(STANConfig().paired_layers(L14_LAYERS)),
                        span(STANConfig(end_layer=end).paired_layers(L14_LAYERS)))
    ranges = re.compile(r"\b\d{1,2}-\d{1,2}\b")
    for preset in (p for p in PRESETS.values() if not p.bundled):
        assert f"layers {trained}" in preset.stan_trained_on, preset.name
        assert f"layers {grafted}" in preset.runs_on and f"feature layer {FEATURE_LAYER}" in preset.runs_on, preset.name
        listed = _text(status(preset.name))
        assert set(ranges.findall(listed)) <= {trained, grafted} and trained in listed and grafted in listed, listed
    import stanchat.pretrained

    assert set(ranges.findall(stanchat.pretrained.__doc__)) == {trained, grafted}
    note = get_preset("llava-v1-7b-lightening").note
    assert set(ranges.findall(note)) == {trained, grafted} and f"on layers {trained}" in note
    readme = README.read_text()
    section = readme[readme.index("### Models"):readme.index("### On a GPU")]
    assert set(ranges.findall(section)) == {trained, grafted}
    assert f"last four layers, {trained}" in section and f"(layer {end}), so it pairs with layers {grafted}" in section
    for row in (line for line in section.splitlines() if line.startswith("| `") and "bundled" not in line):
        assert f"layers {trained} |" in row and f"layers {grafted} |" in row, row


def test_the_preset_describes_its_tower_without_claiming_an_unpublished_config():
    """The authors published the post-pretraining config of B/32 on WebVid (frozen_layers=False), not
    the L/14 one: the preset says so, as the README does."""
    trained_on = get_preset("llava-1.5-7b").stan_trained_on
    assert "the L/14 config is not published" in trained_on and "B/32 on WebVid, sets frozen_layers=False" in trained_on
    assert "B/32 on WebVid" in README.read_text() and "the L/14 one is not published" in README.read_text()


def test_models_gives_the_download_left_in_the_hub_s_units(tmp_path, monkeypatch, capsys):
    from stanchat.cli import main

    use_cache(monkeypatch, tmp_path / "hub")
    monkeypatch.setenv("STANCHAT_HOME", str(tmp_path / "home"))
    assert main(["models"]) == 0
    v1 = get_preset("llava-v1-7b-lightening")
    assert f"to fetch:  about {size_text(int(v1.stan_bytes + v1.llava_bytes))} (`stanchat pull {v1.name}`)" \
        in capsys.readouterr().out


def test_every_preset_records_its_hub_file():
    for preset in PRESETS.values():
        if not preset.bundled:
            assert (preset.stan_repo, preset.stan_checkpoint) == (REPO, FILE)
    assert get_preset("llava-v1-7b-lightening").llava_source == V1_REPO


def test_models_and_pull_help_stay_light():
    """`stanchat models` reads registries and caches only: no torch, no transformers."""
    import subprocess
    import sys

    code = ("import sys; from stanchat.cli import main; main(['models']); "
            "print('heavy:', sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("heavy: []")


@pytest.mark.parametrize("n, text", [(2_013_000_000, "2.01 GB"), (35_240_000, "35.2 MB"), (712_000, "712.0 kB"),
                                     (12, "12 B")])
def test_sizes_read_as_the_hub_shows_them(n, text):
    assert size_text(n) == text


def test_a_llava_is_cached_only_with_all_its_weights(tmp_path, monkeypatch):
    """A download stopped after config.json is not a cached LLaVA (`stanchat models` would call it
    present, and the first ask would leave the rest to from_pretrained with its progress hidden)."""
    import json

    from stanchat.fetch import hub_cached
    from tests.hub_cache import put

    cache = use_cache(monkeypatch, tmp_path / "hub")
    repo, config = "llava-hf/llava-1.5-7b-hf", {"config.json": b"{}"}
    put(cache, repo, config)
    assert not hub_cached(repo)
    index = json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    put(cache, repo, {**config, "model.safetensors.index.json": index.encode(), "model-00001-of-00002.safetensors": b"1"})
    assert not hub_cached(repo)  # one shard of two
    put(cache, repo, {"model-00002-of-00002.safetensors": b"2"})
    assert hub_cached(repo)
    put(cache, "one/file", {**config, "model.safetensors": b"w"})
    assert hub_cached("one/file")
