"""Checkpoint files: atomic commit, keep-last-N, resume resolution, RNG round trip, safe loading."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stanchat.errors import StanchatError
from stanchat.stan import STANConfig
from stanchat.videoclip import VideoCLIP
from tests.tiny import tiny_clip
from training import checkpoint
from training.checkpoint import TrainerState
from training.tiny_backbone import tiny_tokenizer


def write(out, step: int, model: VideoCLIP) -> None:
    final = checkpoint.checkpoint_dir(out, step)
    existed = final.exists()
    tmp = checkpoint.begin(final)
    assert tmp.name.startswith(".tmp-")
    checkpoint.write_rng(tmp, 0)
    optimizer = torch.optim.AdamW(model.stan.parameters())
    checkpoint.write_main(tmp, model.state_dict(), model.config.to_dict(), tiny_tokenizer(), "task: retrieval\n",
                          TrainerState(step=step, epoch=1, batch=2), optimizer.state_dict(), {"last_epoch": step})
    assert final.exists() == existed  # nothing new is visible before the commit
    checkpoint.commit(tmp, final)


@pytest.fixture(scope="module")
def model() -> VideoCLIP:
    return VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2))


def test_checkpoint_is_a_model_directory(tmp_path, model):
    write(tmp_path, 3, model)
    directory = checkpoint.checkpoint_dir(tmp_path, 3)
    loaded = VideoCLIP.from_pretrained(directory)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    state = checkpoint.read_state(directory)  # torch.load(weights_only=True) inside
    assert state["trainer"] == TrainerState(step=3, epoch=1, batch=2)
    assert state["scheduler"] == {"last_epoch": 3}
    assert set(load_file(directory / "model.safetensors")) == set(model.state_dict())


def test_keep_last_and_leftovers(tmp_path, model):
    for step in (1, 2, 3, 4):
        write(tmp_path, step, model)
    root = tmp_path / checkpoint.CHECKPOINTS
    (root / ".tmp-step-00000005").mkdir()  # a write killed half-way
    (root / ".trash-step-00000000").mkdir()  # a delete killed half-way
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [f"step-0000000{i}" for i in (1, 2, 3, 4)]
    checkpoint.prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == ["step-00000003", "step-00000004"]


def test_resolve_resume(tmp_path, model):
    assert checkpoint.resolve_resume("", tmp_path) is None
    assert checkpoint.resolve_resume("latest", tmp_path) is None  # nothing saved yet: start fresh
    write(tmp_path, 7, model)
    write(tmp_path, 12, model)
    assert checkpoint.resolve_resume("latest", tmp_path).name == "step-00000012"
    assert checkpoint.resolve_resume(str(checkpoint.checkpoint_dir(tmp_path, 7)), tmp_path).name == "step-00000007"
    with pytest.raises(StanchatError, match="cannot resume from .* lacks config.json, model.safetensors"):
        checkpoint.resolve_resume(str(tmp_path), tmp_path)


def test_rng_round_trip(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    checkpoint.write_rng(tmp_path, rank=3)
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    assert checkpoint.restore_rng(tmp_path, rank=3)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(3), expected[2])
    assert not checkpoint.restore_rng(tmp_path, rank=0)  # no file for that process


def test_same_step_twice_replaces(tmp_path, model):
    write(tmp_path, 5, model)
    write(tmp_path, 5, model)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000005"]
    assert not list((tmp_path / checkpoint.CHECKPOINTS).glob(".*"))
