"""`training.train.main` end to end on the synthetic world, on CPU: every task for two steps, exact
resume, a SIGKILLed run, and bad input reported in one line before training starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stanchat.videoclip import VideoCLIP
from tests.training_world import tiny_args, tiny_backbone, world  # noqa: F401  (fixtures)
from training import checkpoint
from training.train import main

ROOT = Path(__file__).resolve().parents[2]


def weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(checkpoint.checkpoint_dir(out, step) / "model.safetensors")


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_retrieval_two_steps_with_validation(world, tiny_backbone, tmp_path):
    assert main(tiny_args(world, tiny_backbone, tmp_path, "run.val_every=2", "run.log_every=1")) == 0
    lines = metrics(tmp_path)
    train = [m for m in lines if "loss" in m]
    assert [m["step"] for m in train] == [1, 2] and all(m["loss"] > 0 and m["clips_per_s"] > 0 for m in train)
    assert all(m["grad_norm"] > 0 and m["skipped"] == m["skipped_total"] == 0 for m in train)
    assert all(m["loss_contrastive"] == pytest.approx(m["loss"]) and "loss_still_gap" not in m for m in train)
    assert train[0]["lr_stan"] == pytest.approx(10 * train[0]["lr_clip"])
    val = [m for m in lines if "val_r1_t2v" in m]
    assert [m["step"] for m in val] == [2] and 0 <= val[0]["val_r1_t2v"] <= 100
    model = VideoCLIP.from_pretrained(checkpoint.checkpoint_dir(tmp_path, 2))  # the checkpoint is a model
    start = VideoCLIP.from_clip_pretrained(str(tiny_backbone), model.config.stan)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, start.state_dict()[k])}
    assert any(k.startswith("stan.") for k in changed) and any(k.startswith("clip.text_model") for k in changed)
    assert "clip.logit_scale" not in changed


def test_pretrain_with_mug_on_webvid(world, tiny_backbone, tmp_path):
    args = tiny_args(world, tiny_backbone, tmp_path, "task=pretrain", "data.dataset=webvid",
                     f"data.root={world / 'webvid'}", "data.val_split=", "model.scoring=mug", "run.log_every=1")
    assert main(args) == 0
    assert [m["step"] for m in metrics(tmp_path) if "loss" in m] == [1, 2]


def test_recognition_trains_video_tower_only(world, tiny_backbone, tmp_path):
    args = tiny_args(world, tiny_backbone, tmp_path, "task=recognition", "data.dataset=ucf101",
                     f"data.root={world / 'ucf101'}", "run.val_every=2")
    assert main(args) == 0
    val = [m for m in metrics(tmp_path) if "val_top1" in m]
    assert len(val) == 1 and 0 <= val[0]["val_top1"] <= val[0]["val_top5"] <= 100
    start = VideoCLIP.from_clip_pretrained(str(tiny_backbone), VideoCLIP.from_pretrained(
        checkpoint.checkpoint_dir(tmp_path, 2)).config.stan).state_dict()
    after = weights(tmp_path, 2)
    assert all(torch.equal(after[k], start[k]) for k in after if k.startswith("clip.text_model."))  # frozen text tower
    assert not torch.equal(after["clip.visual_projection.weight"], start["clip.visual_projection.weight"])


def test_graft_setting_trains_stan_only(world, tiny_backbone, tmp_path):
    args = tiny_args(world, tiny_backbone, tmp_path, "model.freeze_clip=true", "model.stan.end_layer=-2",
                     "model.gradient_checkpointing=true", "data.val_split=", "optim.accumulation_steps=2",
                     "model.still_weight=3.0")
    assert main(args) == 0
    start = VideoCLIP.from_clip_pretrained(str(tiny_backbone), VideoCLIP.from_pretrained(
        checkpoint.checkpoint_dir(tmp_path, 2)).config.stan).state_dict()
    after = weights(tmp_path, 2)
    assert all(torch.equal(after[k], start[k]) for k in after if k.startswith("clip."))
    assert any(not torch.equal(after[k], start[k]) for k in after if k.startswith("stan."))
    last = metrics(tmp_path)[-1]  # the loss is the contrastive term plus 3 x the still gap
    assert last["loss"] == pytest.approx(last["loss_contrastive"] + 3.0 * last["loss_still_gap"], rel=1e-4)


def test_motion_still_loss_trains_from_stills_named_in_the_annotations(world, tiny_backbone, tmp_path):
    args = tiny_args(world, tiny_backbone, tmp_path, "data.dataset=jsonl", f"data.root={world / 'jsonl-motion'}",
                     "data.val_split=", "data.batch_size=6", "model.freeze_clip=true", "model.stan.end_layer=-2",
                     "model.motion_still_weight=2.0", "run.log_every=1")
    assert main(args) == 0
    lines = metrics(tmp_path)
    assert [m["step"] for m in lines] == [1, 2] and all(m["loss_motion_gap"] > 0 for m in lines)
    assert all(m["loss"] == pytest.approx(m["loss_contrastive"] + 2.0 * m["loss_motion_gap"], rel=1e-4) for m in lines)


def test_resume_continues_exactly(world, tiny_backbone, tmp_path):
    # 4 steps over 8 MSR-VTT clips x captions, drop-path on, 2 micro-batches per step, a loader worker
    common = ["schedule.steps=4", "data.val_split=", "optim.accumulation_steps=2", "data.num_workers=1",
              "model.stan.drop_path_rate=0.5", "run.save_every=1"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(tiny_args(world, tiny_backbone, straight, *common)) == 0
    assert main(tiny_args(world, tiny_backbone, split, *common, "run.stop_at_step=2")) == 0
    assert [p.name for p in checkpoint.list_checkpoints(split)] == ["step-00000001", "step-00000002"]
    assert main(tiny_args(world, tiny_backbone, split, *common, "--resume")) == 0
    # bit-exact: one machine, the same seeds and the same kernels in the same order; only the process differs
    a, b = weights(straight, 4), weights(split, 4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], weights(straight, 3)[k]) for k in a)  # the last steps did change weights
    sa, sb = (checkpoint.read_state(checkpoint.checkpoint_dir(o, 4)) for o in (straight, split))
    assert sa["trainer"] == sb["trainer"]
    assert [e["event"] for e in metrics(split) if "event" in e] == ["resume"]


def test_sigkill_mid_training_then_resume(world, tiny_backbone, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "training.train", *tiny_args(world, tiny_backbone, out, "schedule.steps=8",
                                                                 "run.save_every=1", "run.keep_last=3", "data.val_split=")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = checkpoint.checkpoint_dir(out, 1)
    deadline = time.monotonic() + 120
    while not first.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL  # killed, not finished
    survivors = checkpoint.list_checkpoints(out)
    assert survivors and int(survivors[-1].name[5:]) < 8
    for directory in survivors:  # whatever the kill interrupted, every visible checkpoint is whole
        assert_loads(directory)
    resumed = subprocess.run([*argv, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {survivors[-1]}" in resumed.stderr
    final = checkpoint.list_checkpoints(out)
    assert [p.name for p in final] == ["step-00000006", "step-00000007", "step-00000008"]
    for directory in final:
        assert_loads(directory)
    assert not list((out / checkpoint.CHECKPOINTS).glob(".*"))  # no half-written leftovers


def assert_loads(directory: Path) -> None:
    VideoCLIP.from_pretrained(directory)
    state = checkpoint.read_state(directory)
    assert state["trainer"].step == int(directory.name[5:])
    assert torch.load(directory / "rng-0.pt", weights_only=True)["torch"].dtype == torch.uint8


@pytest.mark.parametrize("case", ["unknown key", "no videos", "wrong column", "no data root", "unknown dataset",
                                  "no backbone"])
def test_bad_input_is_one_line_before_training(world, tiny_backbone, tmp_path, capsys, case):
    if case == "no videos":
        from training.synthworld import write_dataset
        from tests.training_world import WORLD

        write_dataset(tmp_path / "empty", "msrvtt", n=3, split="train", config=WORLD, missing=3)
    if case == "wrong column":
        bad = tmp_path / "webvid"
        bad.mkdir()
        (bad / "results_2M_train.csv").write_text("videoid,contentUrl,duration,page_dir,caption\n1,u,3,p,a red circle\n")
    extra, expected = {
        "unknown key": (["optim.learning_rate=1e-4"], "unknown config key optim.learning_rate; valid keys in section 'optim'"),
        "no videos": ([f"data.root={tmp_path / 'empty'}"], "none of the 3 videos named by the annotation exist"),
        "wrong column": (["task=pretrain", "data.dataset=webvid", f"data.root={tmp_path / 'webvid'}", "data.val_split="],
                         "missing name (expected videoid, page_dir, name; found videoid, contentUrl"),
        "no data root": ([f"data.root={tmp_path / 'nowhere'}"], "is not a folder"),
        "unknown dataset": (["data.dataset=youcook"], "unknown dataset 'youcook'; valid: webvid, msrvtt"),
        "no backbone": ([f"model.clip={tmp_path / 'no-clip'}"], f"CLIP model directory {tmp_path / 'no-clip'} does not exist"),
    }[case]
    out = tmp_path / "out"
    assert main(tiny_args(world, tiny_backbone, out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("training: error: ") and expected in err[0], err
    assert not (out / checkpoint.CHECKPOINTS).exists() and not (out / "metrics.jsonl").exists()


@pytest.mark.slow
def test_two_process_ddp_on_cpu_resumes_exactly(world, tiny_backbone, tmp_path):
    """torchrun with 2 CPU processes (gloo): the contrastive loss gathers both halves of the batch,
    each process saves its own RNG state, and 2 + resume 2 steps equal 4 straight."""
    def launch(out: Path, *extra: str) -> None:
        argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "training.train",
                *tiny_args(world, tiny_backbone, out, "schedule.steps=4", "run.cpu=true", "data.val_split=",
                           "run.log_every=1"), *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    launch(tmp_path / "straight")
    launch(tmp_path / "split", "run.stop_at_step=2")
    assert sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path / "split", 2).glob("rng-*.pt")) == ["rng-0.pt", "rng-1.pt"]
    launch(tmp_path / "split", "--resume")
    a, b = weights(tmp_path / "straight", 4), weights(tmp_path / "split", 4)
    assert all(torch.equal(a[k], b[k]) for k in a)  # exact: one machine, same seeds and kernels; a + b is b + a
    clips = [m["clips_per_s"] > 0 for m in metrics(tmp_path / "straight") if "loss" in m]
    assert len(clips) == 4 and all(clips)
    assert checkpoint.read_state(checkpoint.checkpoint_dir(tmp_path / "straight", 4))["trainer"].clips == 4 * 2 * 4
