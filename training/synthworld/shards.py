"""Synthetic clips as WebDataset tar shards, in video2dataset's layout.

    ROOT/<split>/00000.tar, 00001.tar, ...   each holding, per sample, in this order:
        <key>.mp4    the video's bytes
        <key>.txt    its caption (UTF-8); recognition data has none
        <key>.json   its metadata: key, caption, status (as video2dataset writes them), split;
                     recognition data holds the class name as `label` instead of a caption
    ROOT/<split>/00000_stats.json, ...       video2dataset's shard statistics (count, successes)

`key` is the clip id; a shard holds `shard_size` samples (the last one fewer). The clips are the
ones `write_dataset(..., "jsonl", task=task)` renders for the same arguments, so a test can compare
a run on shards with a run on the same samples as loose files (`loose=True` keeps them under
ROOT/loose).
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from stanchat.errors import StanchatError
from training.synthworld.formats import write_dataset
from training.synthworld.world import WorldConfig

SHARD_NAME = "{:05d}.tar"  # video2dataset's shard names


@dataclass
class ShardSet:
    """What `write_shards` wrote."""

    root: Path  # data root
    split: str
    shards: list[Path] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # sample keys in stream order
    loose: Path | None = None  # the same samples as a jsonl dataset, when kept


def write_shards(root: str | Path, n: int = 16, seed: int = 0, split: str = "train", shard_size: int = 8,
                 config: WorldConfig = WorldConfig(), exclude: frozenset = frozenset(), only: frozenset | None = None,
                 loose: bool = False, task: str = "retrieval") -> ShardSet:
    """Render `n` clips (as `write_dataset` does for jsonl of `task`: retrieval or recognition) into
    tar shards of `shard_size`."""
    if task not in ("retrieval", "recognition"):
        raise StanchatError(f"webdataset shards hold retrieval or recognition samples, not {task}")
    if shard_size < 1:
        raise StanchatError(f"--shard-size must be >= 1, got {shard_size}")
    root = Path(root)
    out = ShardSet(root, split)
    with tempfile.TemporaryDirectory(prefix="synth-shards-") as tmp:
        loose_root = root / "loose" if loose else Path(tmp)
        data = write_dataset(loose_root, "jsonl", n=n, seed=seed, split=split, config=config, exclude=exclude, only=only,
                             task=task)
        entries = [json.loads(line) for line in data.ann.read_text(encoding="utf-8").splitlines()]
        directory = root / split
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        for start in range(0, len(entries), shard_size):
            path = directory / SHARD_NAME.format(start // shard_size)
            chunk = entries[start:start + shard_size]
            with tarfile.open(path, "w") as tar:
                for entry in chunk:
                    key = Path(entry["video"]).stem
                    _add(tar, f"{key}.mp4", (data.ann.parent / entry["video"]).read_bytes())
                    text = {"caption": entry["caption"]} if "caption" in entry else {"label": entry["label"]}
                    if "caption" in entry:
                        _add(tar, f"{key}.txt", entry["caption"].encode("utf-8"))
                    meta = {"key": key, **text, "status": "success", "split": split}
                    _add(tar, f"{key}.json", json.dumps(meta).encode("utf-8"))
                    out.keys.append(key)
            stats = {"count": len(chunk), "successes": len(chunk), "failed_to_download": 0, "failed_to_subsample": 0}
            path.with_name(f"{path.stem}_stats.json").write_text(json.dumps(stats, indent=4) + "\n")
            out.shards.append(path)
        out.loose = data.ann if loose else None
    return out


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    """One member with fixed metadata, so the same clips give byte-identical shards."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o644
    tar.addfile(info, io.BytesIO(payload))
