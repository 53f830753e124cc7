"""Which WebDataset tar shards a run reads, and which of them each process and worker reads.

`data.root` for shards is one of
  a folder         its `<split>/` subfolder of `*.tar` (as `training.synthworld --format webdataset`
                   writes), else its `<split>-*.tar` / `<split>_*.tar` files
  a brace pattern  `shards/{00000..00999}.tar` (webdataset's own expansion; `::` joins patterns)
  a list file      `*.txt`, one shard a line (relative to the file; `#` starts a comment)
and any entry may be a `pipe:` command (`pipe:aws s3 cp s3://b/00000.tar -`), read as-is.

A wrong source is one line before training starts: no shard matches, a local shard that is not
a tar archive. The split of an epoch's shards over processes and workers is a pure function of
(seed, epoch, rank, world, worker, workers): `shards_for` is what makes a resume position exact.

`shard_samples` reads one shard's samples (webdataset's tar reader) from a given offset, so a
(shard, offset) pair per reader is a resume position. Not done yet: the training data source on
top of these pieces (`data.dataset=webdataset`: decode from bytes, shuffle buffer, checkpointed
positions).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from stanchat.errors import StanchatError

PIPE = "pipe:"
VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov")  # the member a sample's video is read from, first found


@dataclass
class ShardSample:
    """One sample of a shard: where it is (`offset`-th sample of `shard`) and what it holds."""

    shard: str
    offset: int
    key: str
    video: bytes  # the encoded video, as stored
    extension: str  # which member it came from (mp4, webm, ...)
    caption: str
    meta: dict  # the sample's .json, {} without one


def read_sample(raw: dict, shard: str, offset: int, caption_field: str = "") -> ShardSample:
    """A webdataset sample dict -> ShardSample; StanchatError (one line) when it has no video or no
    caption. The caption is `.txt`, or `caption_field` of `.json` when that is set."""
    key = raw.get("__key__", "?")
    extension = next((ext for ext in VIDEO_EXTENSIONS if ext in raw), None)
    if extension is None:
        raise StanchatError(f"sample {key} of {shard} has no video ({'/'.join(VIDEO_EXTENSIONS)} member)")
    meta = json.loads(raw["json"]) if "json" in raw else {}
    if caption_field:
        caption = meta.get(caption_field) if isinstance(meta, dict) else None
        where = f".json field {caption_field!r}"
    else:
        caption, where = raw["txt"].decode("utf-8") if "txt" in raw else None, ".txt member"
    if not isinstance(caption, str) or not caption.strip():
        raise StanchatError(f"sample {key} of {shard} has no caption (no {where}); name the .json "
                            "field that holds it")
    return ShardSample(shard, offset, key, raw[extension], extension, caption.strip(), meta)


def shard_samples(shard: str, start: int = 0, caption_field: str = "") -> Iterator[ShardSample | StanchatError]:
    """The samples of one shard from its `start`-th on (the resume position), in stored order;
    a sample that lacks its video or caption comes out as the StanchatError saying so, in its
    place, so the reader can count it and move on without shifting any offset."""
    from webdataset.tariterators import tarfile_samples

    for offset, raw in enumerate(tarfile_samples([{"url": shard}])):
        if offset < start:
            continue
        try:
            yield read_sample(raw, shard, offset, caption_field)
        except StanchatError as err:
            yield err


def list_shards(source: str, split: str = "train") -> list[str]:
    """Every shard `source` names, in its order (sorted for a folder); see the module docstring."""
    if not source:
        raise StanchatError("data.root is not set; point it at a folder of shards, a brace pattern or a list file")
    path = Path(source)
    if path.is_dir():
        shards = _from_folder(path, split)
    elif path.suffix == ".txt" and path.is_file():
        shards = _from_list(path)
    else:
        from webdataset.shardlists import expand_urls

        shards = expand_urls(source)
        local = [s for s in shards if not s.startswith(PIPE)]
        if local and not any(Path(s).is_file() for s in local):
            raise StanchatError(f"no shard matches {source}; check the path or the {{first..last}} range")
    for shard in shards:
        check_shard(shard)
    return shards


def check_shard(shard: str) -> None:
    """A local shard must exist and be a tar archive; a `pipe:` command is taken as it is."""
    if shard.startswith(PIPE):
        return
    path = Path(shard)
    if not path.is_file():
        raise StanchatError(f"shard {path} does not exist")
    if not tarfile.is_tarfile(path):
        raise StanchatError(f"shard {path} is not a tar archive; WebDataset shards are .tar files")


def shards_for(shards: list[str], seed: int, epoch: int, rank: int = 0, world: int = 1, worker: int = 0,
               workers: int = 1, shuffle: bool = True) -> list[str]:
    """The shards one (process, worker) reads in `epoch`: the epoch's order (a permutation seeded by
    seed + epoch, or the listed order) dealt round-robin over world x workers readers. Readers get
    disjoint shards that together are all of them; with more readers than shards some get none."""
    if len(shards) < world:
        raise StanchatError(f"{len(shards)} shards cannot be split over {world} processes; write smaller shards")
    order = (torch.randperm(len(shards), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
             if shuffle else list(range(len(shards))))
    reader, readers = rank * workers + worker, world * workers
    return [shards[i] for i in order[reader::readers]]


def _from_folder(path: Path, split: str) -> list[str]:
    sub = path / split
    found = sorted(sub.glob("*.tar")) if sub.is_dir() else sorted([*path.glob(f"{split}-*.tar"), *path.glob(f"{split}_*.tar")])
    if not found:
        raise StanchatError(f"no shard matches {path}: expected {sub}/*.tar or {path}/{split}-*.tar")
    return [str(p) for p in found]


def _from_list(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    shards = [s if s.startswith(PIPE) or Path(s).is_absolute() else str(path.parent / s) for s in lines if s]
    if not shards:
        raise StanchatError(f"shard list {path} names no shard")
    return shards
