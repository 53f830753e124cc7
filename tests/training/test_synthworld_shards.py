"""`python -m training.synthworld --format webdataset`: tar shards in video2dataset's layout that
the webdataset library reads back with the captions, metadata and video bytes of the loose clips."""

from __future__ import annotations

import json
import tarfile

import pytest

from training.synthworld import WorldConfig, write_shards
from training.synthworld.__main__ import main

SMALL = WorldConfig(size=16, frames=4, fps=4)


def test_shards_hold_the_loose_samples(tmp_path):
    out = write_shards(tmp_path, n=5, seed=3, split="train", shard_size=2, config=SMALL, loose=True)
    assert [p.name for p in out.shards] == ["00000.tar", "00001.tar", "00002.tar"]
    loose = [json.loads(line) for line in out.loose.read_text().splitlines()]
    members = []
    for shard in out.shards:
        with tarfile.open(shard) as tar:
            members += [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    assert len(members) == 3 * 5  # mp4, txt, json per sample, in that order
    for i, entry in enumerate(loose):
        (mp4, video), (txt, text), (js, meta) = members[3 * i: 3 * i + 3]
        key = out.keys[i]
        assert (mp4, txt, js) == (f"{key}.mp4", f"{key}.txt", f"{key}.json")
        assert video == (out.loose.parent / entry["video"]).read_bytes() and video[4:8] == b"ftyp"
        assert text.decode() == entry["caption"]
        assert json.loads(meta) == {"key": key, "caption": entry["caption"], "status": "success", "split": "train"}
    again = write_shards(tmp_path / "again", n=5, seed=3, split="train", shard_size=2, config=SMALL)
    assert [p.read_bytes() for p in again.shards] == [p.read_bytes() for p in out.shards]  # deterministic


def test_webdataset_reads_the_layout(tmp_path):
    wds = pytest.importorskip("webdataset")
    out = write_shards(tmp_path, n=3, seed=1, split="train", shard_size=2, config=SMALL)
    samples = list(wds.WebDataset([str(p) for p in out.shards], shardshuffle=False))
    assert [s["__key__"] for s in samples] == out.keys
    assert all(set(s) >= {"mp4", "txt", "json"} and s["txt"].decode() == json.loads(s["json"])["caption"] for s in samples)


def test_command_line_writes_shards(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--format", "webdataset", "--n", "3", "--shard-size", "2",
                 "--size", "16", "--frames", "4", "--fps", "4", "--split", "val"]) == 0
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == ["00000.tar", "00000_stats.json", "00001.tar",
                                                                      "00001_stats.json"]
    assert json.loads((tmp_path / "val" / "00001_stats.json").read_text())["successes"] == 1
    assert "3 samples in 2 shards" in capsys.readouterr().out
    assert main(["--out", str(tmp_path), "--format", "webdataset", "--shard-size", "0"]) == 2
    assert "--shard-size" in capsys.readouterr().err
