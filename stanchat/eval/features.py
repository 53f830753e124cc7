"""Video features for evaluation: encode once, cache, reuse; shard the work across processes.

Features of every video are (V, T, P): V views (clips x crops, 1 by default), T frames, P the
projection width, as `VideoCLIP.encode_video` returns them (unnormalised). A run's features are
cached in a folder `<cache_dir>/<dataset>-<key>/` whose key is a hash of everything that changes
them: the model directory's fingerprint, frames, views, frame order (reversed or not),
preprocessing, dataset name, the annotation file's content and the list of videos. The videos are
encoded in blocks of `CACHE_BLOCK`, each saved as `block-NNNNN.safetensors` as soon as it is done,
so a rerun with the same key loads what exists and an interrupted run resumes at the first missing
block.

Sharding: under `accelerate launch`, each process encodes its share of the videos
(`PartialState.split_between_processes`) and `gather_object` brings the shares together, so every
process ends with all features. With one process (plain `stanchat eval ...`) both are no-ops.
Launch with `accelerate launch --num_processes N -m stanchat eval ...` on GPUs, or
`torchrun --nproc_per_node N -m stanchat eval ...` (on CPU the processes talk over gloo).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stanchat.datasets.shards import read_member
from stanchat.errors import StanchatError
from stanchat.video.spool import spooled

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the cache layout or the meaning of a key part changes
CACHE_BLOCK = 256  # videos per cache file: the most work an interruption can lose


@dataclass(frozen=True)
class Clip:
    """One video to encode: a file, or a segment of one (seconds; None = from the start / to the
    end), or the video member of a sample in a WebDataset shard (`path` is then the shard)."""

    path: Path
    start: float | None = None
    end: float | None = None
    member: str | None = None  # the video's member name inside the tar shard `path`

    @classmethod
    def of(cls, record) -> "Clip":
        """The clip a `stanchat.datasets.Record` points at."""
        return cls(Path(record.video), record.start, record.end, record.member)

    @property
    def key(self) -> str:
        """The clip as one string: the path (`shard#member` for a shard's sample), with `@start-end`
        for a segment."""
        name = str(self.path) if self.member is None else f"{self.path}#{self.member}"
        if self.start is None and self.end is None:
            return name
        return f"{name}@{self.start}-{self.end}"

    @contextmanager
    def local_file(self) -> Iterator[Path]:
        """A path the decoders can open: the file itself, or a shard member's bytes spooled to a
        temporary file for the duration of the `with`."""
        if self.member is None:
            yield self.path
            return
        with spooled(read_member(str(self.path), self.member), Path(self.member).suffix) as path:
            yield Path(path)


@dataclass
class VideoFeatures:
    keys: list[str]  # `Clip.key` of each encoded video, in order
    features: "torch.Tensor"  # (Nv, V, T, P) float32, row i belongs to keys[i]; (0,) when Nv = 0
    failed: dict[str, str] = field(default_factory=dict)  # Clip.key -> why it could not be decoded
    cache: dict | None = None  # {"dir", "blocks", "reused_blocks"}; None: caching off


def process_state():
    """accelerate's PartialState for this process. Without CUDA it is asked for CPU explicitly:
    accelerate only forms a multi-process CPU group (gloo) when told `cpu=True`."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(parts: dict) -> str:
    """A 20-hex-digit key from the JSON of `parts` (model fingerprint, frames, dataset, ...)."""
    text = json.dumps({"cache_version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_folder(cache_dir: Path, dataset: str, parts: dict) -> Path:
    return Path(cache_dir) / f"{dataset}-{cache_key(parts)}"


def load_cached(path: Path) -> VideoFeatures | None:
    """Features from a cache file, or None if it does not exist or cannot be read (then re-encoded)."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
            features = handle.get_tensor("features")
        keys = json.loads(meta["keys"])
        failed = json.loads(meta["failed"])
    except Exception as err:  # a truncated or foreign file: re-encode rather than fail the run
        logger.warning("ignoring unreadable feature cache %s (%s)", path, err)
        return None
    if features.shape[0] != len(keys):
        logger.warning("ignoring feature cache %s: %d rows for %d videos", path, features.shape[0], len(keys))
        return None
    return VideoFeatures(keys, features, failed)


def save_cached(path: Path, result: VideoFeatures, parts: dict) -> None:
    """Write features with their video list and the key's parts as metadata, atomically."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"keys": json.dumps(result.keys), "failed": json.dumps(result.failed),
            "key": json.dumps(parts, sort_keys=True, default=str)}
    tmp = path.with_name(path.name + ".tmp")
    save_file({"features": result.features.contiguous()}, str(tmp), metadata=meta)
    tmp.replace(path)


def encode_videos(encode: Callable, load: Callable, clips: list[Clip], batch_size: int = 8,
                  workers: int = 0, bar=None) -> VideoFeatures:
    """Decode and encode every video, sharded over processes, skipping (and naming) undecodable ones.

    Args:
        encode: pixel values (B, V, T, 3, H, W) -> features (B, V, T, P).
        load: Clip -> pixel values (V, T, 3, H, W); raises `StanchatError` (e.g. VideoError) for a
            video it cannot read.
        clips: the videos, each once.
        batch_size: videos per forward pass.
        workers: threads decoding ahead of the model (0: decode in turn). stanchat.video decodes in
            its own worker processes, so threads overlap decoding without forking torch.
        bar: a tqdm bar advanced by the videos this process finishes (None: no progress bar).
    """
    import torch
    from accelerate.utils import gather_object

    local: list[tuple[int, "torch.Tensor | None", str]] = []
    with process_state().split_between_processes(list(range(len(clips)))) as mine:
        batch: list[tuple] = []
        for item in _decoded(load, clips, mine, workers, window=2 * batch_size):
            batch.append(item)
            if len(batch) == batch_size or len(local) + len(batch) == len(mine):  # full, or the last one
                local += _encode_batch(encode, batch)
                if bar is not None:
                    bar.update(len(batch))
                batch = []
    gathered = sorted(gather_object(local), key=lambda item: item[0])
    good = [(i, feats) for i, feats, _ in gathered if feats is not None]
    failed = {clips[i].key: why for i, feats, why in gathered if feats is None}
    features = torch.stack([f for _, f in good]) if good else torch.empty(0)
    return VideoFeatures([clips[i].key for i, _ in good], features, failed)


def _encode_batch(encode: Callable, batch: list[tuple]) -> list[tuple]:
    """[(index, pixels or None, why)] -> [(index, features (V, T, P) on CPU or None, why)]."""
    import torch

    ok = [(i, pixels) for i, pixels, _ in batch if pixels is not None]
    out = [(i, None, why) for i, pixels, why in batch if pixels is None]
    if ok:
        with torch.inference_mode():
            feats = encode(torch.stack([pixels for _, pixels in ok]))  # (B, V, T, 3, H, W) -> (B, V, T, P)
        out += [(i, f.float().cpu(), "") for (i, _), f in zip(ok, feats)]
    return out


def _decode_one(load: Callable, clip: Clip, index: int) -> tuple:
    """(index, pixels, "") or, for a video that cannot be read, (index, None, why)."""
    try:
        return index, load(clip), ""
    except StanchatError as err:
        logger.warning("skipping %s: %s", clip.key, err)
        return index, None, str(err)


def _decoded(load: Callable, clips: list[Clip], indices: list[int], workers: int, window: int):
    """Yield `_decode_one` results in order, at most `window` decoded ahead (bounded memory)."""
    if workers <= 0:
        yield from (_decode_one(load, clips[i], i) for i in indices)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for i in indices:
            pending.append(pool.submit(_decode_one, load, clips[i], i))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def cached_video_features(encode: Callable, load: Callable, clips: list[Clip], cache_dir: Path | None,
                          dataset: str, key_parts: dict, batch_size: int = 8, workers: int = 0) -> VideoFeatures:
    """`encode_videos` behind the block cache (see the module doc): blocks already in the cache are
    loaded, the others encoded and saved by the main process. `cache_dir` None turns caching off.
    Raises StanchatError when not a single video could be decoded."""
    import torch
    from tqdm.auto import tqdm

    parts = {**key_parts, "dataset": dataset, "videos": hashlib.sha256(
        "\n".join(clip.key for clip in clips).encode()).hexdigest()}
    folder = cache_folder(cache_dir, dataset, parts) if cache_dir is not None else None
    state = process_state()
    bar = tqdm(total=len(clips), desc=f"encoding {dataset}", unit="video", disable=not state.is_local_main_process)
    blocks, reused = [], 0
    for number, start in enumerate(range(0, len(clips), CACHE_BLOCK)):
        chunk = clips[start:start + CACHE_BLOCK]
        path = None if folder is None else folder / f"block-{number:05d}.safetensors"
        block = _reusable(path, chunk)
        if block is not None:
            reused += 1
        else:
            block = encode_videos(encode, load, chunk, batch_size, workers, bar)
            if path is not None and state.is_main_process:
                save_cached(path, block, {**parts, "block": number})
        bar.update(start + len(chunk) - bar.n)  # reused videos and the other processes' share
        blocks.append(block)
    bar.close()
    keys = [k for b in blocks for k in b.keys]
    failed = {k: why for b in blocks for k, why in b.failed.items()}
    if not keys:
        raise StanchatError(f"none of the {len(clips)} videos could be decoded (first: {next(iter(failed.values()))})")
    features = torch.cat([b.features for b in blocks if b.keys])
    cache = None if folder is None else {"dir": str(folder), "blocks": len(blocks), "reused_blocks": reused}
    if folder is not None and reused:
        logger.info("video features: %d of %d blocks from the cache %s", reused, len(blocks), folder)
    return VideoFeatures(keys, features, failed, cache)


def _reusable(path: Path | None, chunk: list[Clip]) -> VideoFeatures | None:
    """The cached block at `path` if it holds exactly these clips (encoded or failed), else None."""
    if path is None:
        return None
    block = load_cached(path)
    if block is None or sorted([*block.keys, *block.failed]) != sorted(clip.key for clip in chunk):
        return None
    return block
