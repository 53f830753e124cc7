"""`stanchat eval retrieval|recognition --dataset webdataset`: shards in video2dataset's layout give
the same numbers as the same samples as loose files; shard lists; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stanchat.cli import main
from stanchat.datasets import read_dataset
from tests.evalkit import FRAMES, error_line, save_eval_model
from training.synthworld import WorldConfig, write_shards

WORLD = WorldConfig(size=32, frames=8)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_eval_model(tmp_path_factory.mktemp("eval-model") / "model")


def evaluate(task: str, dataset: str, root: Path, model: Path, out: Path, *extra: str) -> dict:
    argv = ["eval", task, "--dataset", dataset, "--data-root", str(root), "--model", str(model), "--frames", FRAMES,
            "--out", str(out), "--cache-dir", str(out / "cache"), "--workers", "0", *extra]
    assert main(argv) == 0
    return json.loads((out / f"{task}.json").read_text())


@pytest.mark.parametrize("task", ["retrieval", "recognition"])
def test_shards_score_like_the_same_samples_as_loose_files(model, tmp_path, task):
    written = write_shards(tmp_path / "data", n=5, seed=6, split="test", shard_size=2, config=WORLD, task=task,
                           loose=True)
    records = read_dataset("webdataset", tmp_path / "data", task=task)
    assert [r.video_id for r in records] == written.keys and all(r.member == f"{r.video_id}.mp4" for r in records)
    shards = evaluate(task, "webdataset", tmp_path / "data", model, tmp_path / "shards")
    loose = evaluate(task, "jsonl", written.loose.parent, model, tmp_path / "loose", "--split", "test")
    assert shards["metrics"] == loose["metrics"]  # the same bytes decoded, the same features
    assert shards["dataset"]["counts"]["videos_encoded"] == 5


def test_a_list_of_shards_and_a_pipe(model, tmp_path, capsys):
    written = write_shards(tmp_path / "data", n=3, seed=6, split="test", shard_size=2, config=WORLD)
    listing = tmp_path / "shards.txt"
    listing.write_text("".join(f"{p}\n" for p in written.shards))
    results = evaluate("retrieval", "webdataset", tmp_path / "data", model, tmp_path / "out", "--ann", str(listing))
    assert results["metrics"]["text_to_video"]["queries"] == 3
    listing.write_text(f"pipe:cat {written.shards[0]}\n")
    argv = ["eval", "retrieval", "--dataset", "webdataset", "--data-root", str(tmp_path / "data"), "--model",
            str(model), "--ann", str(listing), "--out", str(tmp_path / "out2")]
    assert main(argv) == 2
    assert "copy the shards to disk first" in error_line(capsys.readouterr().err)


def test_an_undecodable_member_is_skipped_and_named(model, tmp_path):
    import io
    import tarfile

    written = write_shards(tmp_path / "data", n=3, seed=6, split="test", shard_size=3, config=WORLD)
    with tarfile.open(written.shards[0], "a") as tar:
        for name, payload in (("junk.mp4", b"not a video"), ("junk.txt", b"a blue square")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    results = evaluate("retrieval", "webdataset", tmp_path / "data", model, tmp_path / "out")
    assert results["dataset"]["counts"]["videos_undecodable"] == 1
    assert list(results["dataset"]["skipped"]["undecodable"]) == [f"{written.shards[0]}#junk.mp4"]
