"""WebDataset tar shards in video2dataset's layout: which shards a source names, how an epoch's
shards are dealt to readers, and reading their samples, streamed (training) or by member (evaluation).

A sample is the tar members that share a key (the name up to the first dot):
    KEY.mp4 (or .webm .mkv .avi .mov)   the video's bytes
    KEY.txt                              its caption
    KEY.json                             its metadata (video2dataset: key, caption, status, url, ...)
video2dataset also writes `NNNNN_stats.json` beside each shard; its `successes` is the number of
samples in the shard, which is how a run learns an epoch's length without reading the shards.

A source (`data.root` in training, `--ann` / the split folder in evaluation) is one of
  a folder         its `<split>/` subfolder of `*.tar` (as `training.synthworld --format webdataset`
                   writes), else its `<split>-*.tar` / `<split>_*.tar` files, else its own `*.tar`
  a brace pattern  `shards/{00000..00999}.tar` (webdataset's own expansion; `::` joins patterns)
  a list file      `*.txt`, one shard a line (relative to the file; `#` starts a comment)
and a shard may be a `pipe:` command (`pipe:aws s3 cp s3://b/00000.tar -`), read as it is.

Pure standard library at import (webdataset is imported by the functions that stream).
"""

from __future__ import annotations

import functools
import json
import random
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stanchat.datasets.base import Record, clean_class_name
from stanchat.errors import StanchatError

PIPE = "pipe:"
VIDEO_MEMBERS = ("mp4", "webm", "mkv", "avi", "mov")  # a sample's video is its first member of these kinds
LABEL_FIELD = "label"  # the .json field evaluation reads a recognition sample's class name from


@dataclass
class ShardSample:
    """One sample of a shard: where it is (`offset`-th sample of `shard`) and what it holds."""

    shard: str
    offset: int
    key: str
    video: bytes  # the encoded video, as stored
    extension: str  # which member it came from (mp4, webm, ...)
    text: str  # the caption, or with a label field the class name (cleaned like every class name)
    meta: dict  # the sample's .json, {} without one


def read_sample(raw: dict, shard: str, offset: int, caption_field: str = "", label_field: str = "") -> ShardSample:
    """A webdataset sample dict -> ShardSample; StanchatError (one line) when it has no video or no
    text. The text is `label_field` of `.json` when that is set (recognition), else `caption_field`
    of `.json` when that is set, else the `.txt` member."""
    key = raw.get("__key__", "?")
    extension = next((ext for ext in VIDEO_MEMBERS if ext in raw), None)
    if extension is None:
        raise StanchatError(f"sample {key} of {shard} has no video ({'/'.join(VIDEO_MEMBERS)} member)")
    meta = _meta(raw.get("json"), key, shard)
    field = label_field or caption_field
    if field:
        text, where = meta.get(field), f".json field {field!r}"
    else:
        text, where = raw["txt"].decode("utf-8", "replace") if "txt" in raw else None, ".txt member"
    if not isinstance(text, str) or not text.strip():
        kind = "label" if label_field else "caption"
        raise StanchatError(f"sample {key} of {shard} has no {kind} (no {where}); name the .json field that holds it")
    text = clean_class_name(text) if label_field else text.strip()
    return ShardSample(shard, offset, key, raw[extension], extension, text, meta)


def _meta(raw: bytes | None, key: str, shard: str) -> dict:
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StanchatError(f"sample {key} of {shard} has a .json member that is not JSON") from None
    return meta if isinstance(meta, dict) else {}


def shard_samples(shard: str, start: int = 0, caption_field: str = "",
                  label_field: str = "") -> Iterator[tuple[int, ShardSample | StanchatError]]:
    """(offset, sample) for the samples of one shard from its `start`-th on (a resume position),
    in stored order.

    A sample that lacks its video or text comes out as the StanchatError saying so, in its place,
    so a reader can count it and move on without shifting any offset. A shard that cannot be read
    on (cut short, not a tar, a failed pipe) ends with one StanchatError at the offset where it broke."""
    from webdataset.tariterators import tarfile_samples

    broken: list[Exception] = []

    def stop(err: Exception) -> bool:  # webdataset's handler: keep the error, end the stream there
        broken.append(err)
        return False

    offset = start
    try:
        for index, raw in enumerate(tarfile_samples([{"url": shard}], handler=stop)):
            offset = index + 1
            if index < start:
                continue
            try:
                yield index, read_sample(raw, shard, index, caption_field, label_field)
            except StanchatError as err:
                yield index, err
    except Exception as err:  # noqa: BLE001 - tarfile, gzip and pipe errors come in many types
        broken.append(err)
    if broken:
        detail = str(broken[0]).splitlines()[0] if str(broken[0]) else type(broken[0]).__name__
        yield max(offset, start), StanchatError(f"shard {shard} cannot be read past sample {offset} ({detail}); "
                                                "the rest of it is skipped")


def list_shards(source: str, split: str = "train") -> list[str]:
    """Every shard `source` names, in its order (sorted for a folder); see the module docstring."""
    if not source:
        raise StanchatError("no shards named; point data.root at a folder of shards, a brace pattern or a list file")
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
    order = list(range(len(shards)))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    reader, readers = rank * workers + worker, world * workers
    return [shards[i] for i in order[reader::readers]]


def shard_sizes(shards: list[str]) -> list[int] | None:
    """Samples per shard from video2dataset's `NNNNN_stats.json` (`successes`) beside each shard;
    None when a shard has none (or is a `pipe:`), since then only reading tells."""
    sizes = []
    for shard in shards:
        stats = Path(shard).with_name(Path(shard).stem + "_stats.json")
        if shard.startswith(PIPE) or not stats.is_file():
            return None
        try:
            sizes.append(int(json.loads(stats.read_text())["successes"]))
        except (ValueError, KeyError, TypeError):
            raise StanchatError(f"{stats} has no whole `successes` count; fix or delete it") from None
    return sizes


def _from_folder(path: Path, split: str) -> list[str]:
    sub = path / split
    if sub.is_dir():
        found = sorted(sub.glob("*.tar"))
    else:
        found = sorted([*path.glob(f"{split}-*.tar"), *path.glob(f"{split}_*.tar")]) or sorted(path.glob("*.tar"))
    if not found:
        raise StanchatError(f"no shard matches {path}: expected {sub}/*.tar, {path}/{split}-*.tar or {path}/*.tar")
    return [str(p) for p in found]


def _from_list(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    shards = [s if s.startswith(PIPE) or Path(s).is_absolute() else str(path.parent / s) for s in lines if s]
    if not shards:
        raise StanchatError(f"shard list {path} names no shard")
    return shards


# Evaluation: random access to local shards, a sample's video read by its member name.

@dataclass(frozen=True)
class Member:
    name: str  # as stored in the tar
    offset: int  # byte offset of its data in the file
    size: int  # bytes


@functools.lru_cache(maxsize=8)
def members(shard: str) -> dict[str, Member]:
    """{name: Member} of a local shard's regular files, in stored order (one pass over its
    headers; the data is skipped, not read)."""
    found: dict[str, Member] = {}
    try:
        with tarfile.open(shard, "r:") as tar:
            for info in tar:
                if info.isreg():
                    found[info.name] = Member(info.name, info.offset_data, info.size)
    except (tarfile.TarError, OSError) as err:
        raise StanchatError(f"shard {shard} cannot be read ({err}); check or re-write it") from None
    return found


def split_name(name: str) -> tuple[str, str] | None:
    """A member name -> (sample key, extension): the key runs to the first dot of the file name
    (WebDataset's rule: `a/b.left.jpg` -> (`a/b`, `left.jpg`)); None for a name without a dot."""
    match = re.match(r"^((?:.*/|)[^./]+)\.([^/]*)$", name)
    return (match.group(1), match.group(2).lower()) if match else None


def read_member(shard: str, name: str) -> bytes:
    """The bytes of member `name` of a local shard."""
    member = members(shard).get(name)
    if member is None:
        raise StanchatError(f"shard {shard} has no member {name}")
    with open(shard, "rb") as f:
        f.seek(member.offset)
        data = f.read(member.size)
    if len(data) != member.size:
        raise StanchatError(f"shard {shard} is cut short inside {name}; re-write it")
    return data


def read_shard_records(source: Path, videos: Path, split: str) -> list[Record]:
    """Records of every sample in the local shards `source` names (a folder of `*.tar` or a `.txt`
    list): a retrieval record with the `.txt` caption, or a recognition record when the `.json`
    holds a `label`. `Record.video` is the shard and `Record.member` the video's member in it."""
    if source.is_dir():
        shards = [str(p) for p in sorted(source.glob("*.tar"))]
    else:
        shards = _from_list(source) if source.suffix == ".txt" else [str(source)]
    piped = [s for s in shards if s.startswith(PIPE)]
    if piped:
        raise StanchatError(f"evaluation reads local shards (it opens each video by its place in the tar); "
                            f"{piped[0]} is a pipe: copy the shards to disk first")
    records = []
    for shard in shards:
        check_shard(shard)
        samples: dict[str, dict[str, Member]] = {}
        for member in members(shard).values():
            parts = split_name(member.name)
            if parts is not None and not Path(member.name).name.startswith("__"):
                samples.setdefault(parts[0], {})[parts[1]] = member
        records += [_record(shard, key, found) for key, found in samples.items()]
    return [r for r in records if r is not None]


def _record(shard: str, key: str, members: dict[str, Member]) -> Record | None:
    video = next((members[ext] for ext in VIDEO_MEMBERS if ext in members), None)
    if video is None:
        return None  # a key with no video (e.g. a stray file): not a sample
    meta = _meta(read_member(shard, members["json"].name), key, shard) if "json" in members else {}
    if isinstance(meta.get(LABEL_FIELD), str):
        return Record(video=Path(shard), video_id=key, label=clean_class_name(meta[LABEL_FIELD]), member=video.name)
    if "txt" not in members:
        raise StanchatError(f"sample {key} of {shard} has no caption (.txt) and no .json {LABEL_FIELD!r}")
    caption = read_member(shard, members["txt"].name).decode("utf-8", "replace").strip()
    return Record(video=Path(shard), video_id=key, text=caption, member=video.name)
