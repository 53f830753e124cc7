"""`training.train.main` on WebDataset shards (`data.dataset=webdataset`): the same run as on the
same samples as loose files, a SIGKILLed run resumed without repeating or skipping a sample, bad
samples skipped and counted, two processes reading disjoint shards, and one-line errors before
training starts."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training_world import WORLD, tiny_backbone  # noqa: F401  (fixture)
from training import checkpoint
from training.synthworld import write_shards
from training.train import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "training" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """12 clips in 3 shards of 4 (train/00000.tar ...), and the same clips as loose jsonl files."""
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, n=12, seed=4, split="train", shard_size=4, config=WORLD, loose=True)
    return root


def args(backbone: Path, root: Path | str, out: Path, *extra: str) -> list[str]:
    return ["--config", str(TINY), f"model.clip={backbone}", "data.dataset=webdataset", f"data.root={root}",
            "data.val_split=", f"run.output_dir={out}", "run.progress=false", "run.log_every=1", *extra]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def steps(out: Path) -> list[list[str]]:
    """The clip keys each step trained on (run.log_samples), step by step."""
    return [line["keys"] for line in lines(out / "samples-0.jsonl")]


def test_shards_train_exactly_like_the_same_samples_as_loose_files(shards, tiny_backbone, tmp_path):
    common = ["schedule.steps=3", "data.shuffle=false", "data.batch_size=4"]
    assert main(args(tiny_backbone, shards, tmp_path / "shards", *common)) == 0
    loose = [a for a in args(tiny_backbone, shards / "loose", tmp_path / "loose", *common) if "webdataset" not in a]
    assert main([*loose, "data.dataset=jsonl"]) == 0
    # bit-exact: the same bytes decoded with the same seeds, batched in the same order, on one machine
    a = load_file(checkpoint.checkpoint_dir(tmp_path / "shards", 3) / "model.safetensors")
    b = load_file(checkpoint.checkpoint_dir(tmp_path / "loose", 3) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [[m["loss"] for m in lines(out / "metrics.jsonl")] for out in (tmp_path / "shards", tmp_path / "loose")]
    assert losses[0] == losses[1] and len(losses[0]) == 3


def test_a_killed_run_resumes_without_repeating_or_skipping_a_sample(shards, tiny_backbone, tmp_path):
    # 2 loader workers, shuffled shards and windows; 3 shards of 4 over 2 readers, batches of 2 ->
    # 6 batches an epoch, so 9 steps cross an epoch boundary
    common = ["schedule.steps=9", "data.num_workers=2", "data.batch_size=2", "data.shuffle_buffer=3",
              "run.save_every=1", "run.keep_last=20", "run.log_samples=true"]
    # both runs in fresh processes with the same thread count: this one's torch threads are whatever
    # earlier tests left, and another thread count sums in another order
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    train = [sys.executable, "-m", "training.train"]
    straight = subprocess.run([*train, *args(tiny_backbone, shards, tmp_path / "straight", *common)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "killed"
    argv = [*train, *args(tiny_backbone, shards, out, *common)]
    child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    third, deadline = checkpoint.checkpoint_dir(out, 3), time.monotonic() + 180
    while not third.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    resumed = subprocess.run([*argv, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = steps(tmp_path / "straight")
    assert steps(out) == straight  # the same clips at every step, in the same order
    # and augmented alike: bit-exact weights (one machine, the same seeds, threads and kernels in the same order)
    a, b = (load_file(checkpoint.checkpoint_dir(o, 9) / "model.safetensors") for o in (tmp_path / "straight", out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    first_epoch = [key for step in straight[:6] for key in step]
    assert len(first_epoch) == len(set(first_epoch)) == 12  # one pass: every sample once
    assert straight[6:9] != straight[:3]  # the second epoch in a new order
    assert json.loads((checkpoint.list_checkpoints(out)[0] / "stream-0.json").read_text())["layout"]["workers"] == 2


def rewrite_with_bad_samples(source: Path, target: Path) -> None:
    """`source`'s samples with a sample of garbage video bytes after the first one."""
    with tarfile.open(source) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    bad = [("bad.mp4", b"not a video at all"), ("bad.txt", b"a red circle moves left")]
    with tarfile.open(target, "w") as out:
        for i, (name, payload) in enumerate([(m.name, data) for m, data in members[:3]] + bad +
                                            [(m.name, data) for m, data in members[3:]]):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            out.addfile(info, io.BytesIO(payload))


def test_an_undecodable_sample_is_skipped_and_counted(shards, tiny_backbone, tmp_path):
    target = tmp_path / "data" / "train"
    target.mkdir(parents=True)
    for shard in sorted((shards / "train").glob("*.tar")):
        rewrite_with_bad_samples(shard, target / shard.name)
    out = tmp_path / "run"
    assert main(args(tiny_backbone, tmp_path / "data", out, "schedule.steps=3", "data.shuffle=false",
                     "data.batch_size=4", "run.log_samples=true")) == 0
    assert lines(out / "metrics.jsonl")[-1]["skipped_total"] == 3  # one in each shard
    assert "bad" not in {key for step in steps(out) for key in step}


@pytest.mark.parametrize("case", ["no match", "not a tar", "no video", "no caption", "epochs unknown",
                                  "recognition without classes", "motion stills"])
def test_bad_shards_are_one_line_before_training(shards, tiny_backbone, tmp_path, capsys, case):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    source, extra = str(data), ["schedule.steps=2"]
    if case == "no match":
        source, expected = f"{data}/train/{{00000..00002}}.tar", "no shard matches"
    elif case == "not a tar":
        (data / "train" / "00000.tar").write_text("hello")
        expected = "is not a tar archive"
    elif case in ("no video", "no caption"):
        member = "k.txt" if case == "no video" else "k.mp4"
        with tarfile.open(data / "train" / "00000.tar", "w") as tar:
            info = tarfile.TarInfo(member)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        expected = "has no video" if case == "no video" else "has no caption"
    else:
        source = str(shards)
        expected, extra = {
            "epochs unknown": ("set schedule.steps", ["schedule.steps=0"]),
            "recognition without classes": ("needs data.class_names", ["task=recognition"]),
            "motion stills": ("shards do not carry", ["model.motion_still_weight=1"]),
        }[case]
        if case == "epochs unknown":  # a shard without video2dataset's stats file: its size is unknown
            source = str(tmp_path / "copy")
            (tmp_path / "copy").mkdir()
            for shard in sorted((shards / "train").glob("*.tar")):
                (tmp_path / "copy" / shard.name).write_bytes(shard.read_bytes())
    assert main(args(tiny_backbone, source, tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("training: error: ") and expected in err[0], err
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_two_processes_read_disjoint_shards_and_resume_exactly(tiny_backbone, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): each reads its own shards, together all of
    them once an epoch; with 5 shards one process has 3, the other 2, and the epoch ends for both
    when the second runs out (it would hang in the loss's gather otherwise); stopped and resumed,
    each process trains on what it would have."""
    root = tmp_path / "data"
    written = write_shards(root, n=20, seed=5, split="train", shard_size=4, config=WORLD)

    def launch(out: Path, *extra: str) -> None:
        argv = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "training.train",
                *args(tiny_backbone, root, out, "schedule.steps=6", "run.cpu=true", "data.batch_size=2",
                      "run.log_samples=true"), *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    launch(tmp_path / "straight")
    per_rank = [[line["keys"] for line in lines(tmp_path / "straight" / f"samples-{r}.jsonl")] for r in (0, 1)]
    shard_of = {key: i // 4 for i, key in enumerate(written.keys)}
    # epoch 1 is 4 steps: the process with 2 shards (8 clips, 4 batches) runs out first
    epoch = [[key for step in steps[:4] for key in step] for steps in per_rank]
    assert [len(set(keys)) for keys in epoch] == [8, 8] and not set(epoch[0]) & set(epoch[1])
    shards = [{shard_of[k] for k in keys} for keys in epoch]
    assert sorted(len(s) for s in shards) == [2, 3] and not shards[0] & shards[1]  # 3 shards vs 2, disjoint
    three = max((0, 1), key=lambda r: len(shards[r]))
    left = {k for k in written.keys if shard_of[k] in shards[three]} - set(epoch[three])  # 4 clips not trained on
    assert len(left) == 4 and {k for step in per_rank[three][4:] for k in step} != left  # it went on into epoch 2
    launch(tmp_path / "split", "run.stop_at_step=3")
    launch(tmp_path / "split", "--resume")
    assert [[line["keys"] for line in lines(tmp_path / "split" / f"samples-{r}.jsonl")] for r in (0, 1)] == per_rank


def test_pipe_commands_and_a_shard_list_stream_the_same_samples(shards, tiny_backbone, tmp_path):
    listing = tmp_path / "shards.txt"
    listing.write_text("".join(f"pipe:cat {p}  # streamed through a command\n"
                               for p in sorted((shards / "train").glob("*.tar"))))
    common = ["schedule.steps=2", "data.shuffle=false", "data.batch_size=4", "run.log_samples=true"]
    assert main(args(tiny_backbone, listing, tmp_path / "piped", *common)) == 0
    assert main(args(tiny_backbone, shards, tmp_path / "folder", *common)) == 0
    assert steps(tmp_path / "piped") == steps(tmp_path / "folder")
