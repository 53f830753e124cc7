"""Shard sources (folder, brace pattern, list file, pipe:), their one-line errors, the split of an
epoch's shards over processes and workers, and reading samples (captions, labels, stats)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from stanchat.datasets.shards import list_shards, shard_samples, shard_sizes, shards_for
from stanchat.errors import StanchatError
from training.synthworld import WorldConfig, write_shards


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, n=5, seed=0, split="train", shard_size=1, config=WorldConfig(size=16, frames=4, fps=4))
    return root


def test_sources_name_the_same_shards(shard_root, tmp_path):
    folder = list_shards(str(shard_root), "train")
    assert [s.rsplit("/", 1)[1] for s in folder] == [f"{i:05d}.tar" for i in range(5)]
    assert list_shards(f"{shard_root}/train/{{00000..00004}}.tar") == folder
    listing = tmp_path / "shards.txt"
    listing.write_text("".join(f"{s}  # shard\n" for s in folder) + "\npipe:cat x.tar\n")
    assert list_shards(str(listing)) == [*folder, "pipe:cat x.tar"]


@pytest.mark.parametrize("case", ["no match", "empty folder", "not a tar", "empty list"])
def test_bad_sources_are_one_line(shard_root, tmp_path, case):
    if case == "no match":
        source, expected = f"{tmp_path}/{{00000..00003}}.tar", "no shard matches"
    elif case == "empty folder":
        source, expected = str(tmp_path), "no shard matches"
    elif case == "not a tar":
        (tmp_path / "train").mkdir()
        (tmp_path / "train" / "00000.tar").write_text("not a tar")
        source, expected = str(tmp_path), "is not a tar archive"
    else:
        (tmp_path / "list.txt").write_text("# nothing\n")
        source, expected = str(tmp_path / "list.txt"), "names no shard"
    with pytest.raises(StanchatError, match=expected) as err:
        list_shards(source, "train")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("world,workers", [(1, 1), (2, 1), (2, 2), (1, 3)])
def test_readers_get_disjoint_shards_that_cover_the_epoch(world, workers):
    shards = [f"{i:05d}.tar" for i in range(7)]
    for epoch in range(2):
        parts = [shards_for(shards, 5, epoch, r, world, w, workers) for r in range(world) for w in range(workers)]
        flat = [s for part in parts for s in part]
        assert sorted(flat) == shards and len(set(flat)) == len(flat)
        assert parts == [shards_for(shards, 5, epoch, r, world, w, workers) for r in range(world) for w in range(workers)]
    assert shards_for(shards, 5, 0) != shards_for(shards, 5, 1)  # a new order each epoch
    assert shards_for(shards, 5, 0, shuffle=False) == shards
    with pytest.raises(StanchatError, match="cannot be split over 8 processes"):
        shards_for(shards, 5, 0, 0, 8)


def test_samples_read_back_and_restart_at_an_offset(shard_root, tmp_path):
    out = write_shards(tmp_path, n=4, seed=2, split="train", shard_size=4, config=WorldConfig(size=16, frames=4, fps=4),
                       loose=True)
    loose = [json.loads(line) for line in out.loose.read_text().splitlines()]
    samples = [got for _, got in shard_samples(str(out.shards[0]))]
    assert [(s.offset, s.key, s.text) for s in samples] == [(i, k, e["caption"]) for i, (k, e) in
                                                            enumerate(zip(out.keys, loose))]
    assert samples[1].video == (out.loose.parent / loose[1]["video"]).read_bytes() and samples[1].extension == "mp4"
    assert [(o, s.key) for o, s in shard_samples(str(out.shards[0]), start=2)] == list(enumerate(out.keys))[2:]
    assert [s.text for _, s in shard_samples(str(out.shards[0]), caption_field="caption")] == [e["caption"] for e in loose]
    # a sample without a caption and one without a video keep their places and say what they lack
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        for name, payload in (("a.mp4", b"x"), ("b.txt", b"cap"), ("c.mp4", b"y"), ("c.txt", b"fine")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    got = list(shard_samples(str(bad)))
    assert [(o, type(g).__name__) for o, g in got] == [(0, "StanchatError"), (1, "StanchatError"), (2, "ShardSample")]
    assert "no caption" in str(got[0][1]) and "no video" in str(got[1][1])


def test_labels_come_from_the_named_json_field(tmp_path):
    out = write_shards(tmp_path, n=3, seed=2, split="train", shard_size=3, config=WorldConfig(size=16, frames=4, fps=4),
                       task="recognition", loose=True)
    loose = [json.loads(line) for line in out.loose.read_text().splitlines()]
    got = [s for _, s in shard_samples(str(out.shards[0]), label_field="label")]
    assert [s.text for s in got] == [e["label"] for e in loose]
    assert "no label" in str(next(iter(shard_samples(str(out.shards[0]), label_field="class")))[1])


def test_stats_files_give_the_epoch_length(tmp_path):
    out = write_shards(tmp_path, n=5, seed=2, split="train", shard_size=2, config=WorldConfig(size=16, frames=4, fps=4))
    assert shard_sizes([str(p) for p in out.shards]) == [2, 2, 1]
    (out.shards[1].parent / "00001_stats.json").unlink()
    assert shard_sizes([str(p) for p in out.shards]) is None
    assert shard_sizes(["pipe:cat x.tar"]) is None
