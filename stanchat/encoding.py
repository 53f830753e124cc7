"""Video -> the LLM's video tokens, behind one bounded cache: `VideoChat.encode` runs this.

`EncodedVideo` is what every front end gets back: the projected tokens (1, N, E), the clip they
come from (its frames at the model's input size, its timestamps and source metadata), the
seconds decoding and the vision tower took, and under `--select question` the chosen frames'
weights (`stanchat.selection`; then the key holds the chosen frames too, so a follow-up question
that chooses the same frames is not encoded again). `VideoCache` keeps the last few encodings (LRU) under
a key of the video's content digest and the `VideoOptions`, so the same video asked about again,
by another path, as an upload or in another front end, skips decoding and the tower. One lock per
key: concurrent requests for one video encode it once. A clip sampled at random without a seed is
never cached (its frames differ each time).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Hashable

from stanchat.options import VideoOptions

if TYPE_CHECKING:
    import torch

    from stanchat.video import SampledFrames

DIGEST_CHUNK = 1 << 20  # bytes hashed per read


@dataclass(frozen=True)
class EncodedVideo:
    """A video as the LLM reads it."""

    features: "torch.Tensor"  # (1, N, E) projected video tokens
    clip: "SampledFrames"  # the sampled frames (at the model's input size), timestamps, source metadata
    options: VideoOptions  # how it was sampled and encoded
    decode_seconds: float  # decoding + preprocessing when it was encoded
    vision_seconds: float  # tower + STAN + projector when it was encoded
    cache_hit: bool = False  # taken from the cache (then both seconds are 0: this call spent none)
    weights: tuple[float, ...] | None = None  # select=question: each used frame's Mug weight among the candidates
    select_seconds: float = 0.0  # select=question: scoring the candidates and choosing (this call)

    @property
    def video_tokens(self) -> int:
        """N."""
        return int(self.features.shape[1])

    @property
    def frames(self) -> int:
        """T frames sampled."""
        return len(self.clip.timestamps)

    @property
    def spans(self) -> list[tuple[float, float]] | None:
        """Under temporal segments: (start, end) seconds of each window, in time order; else None.
        Uniform frames' last window ends where the sampled part of the video ends."""
        from stanchat.segments import window_spans

        if self.options.temporal != "segments":
            return None
        end = self.options.end if self.options.end is not None else self.clip.duration
        return window_spans(self.clip.timestamps, self.options.segments,
                            None if self.options.select == "question" else end)


class VideoCache:
    """`get(key, make)`: the cached value under `key`, else `make()` stored (LRU, `capacity` entries;
    0 keeps nothing). Returns (value, hit)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.hits = self.misses = 0
        self._entries: OrderedDict[tuple, EncodedVideo] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}

    def clear(self) -> None:
        """Forget every encoding (the counters stay)."""
        with self._lock:
            self._entries.clear()

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "capacity": self.capacity, "hits": self.hits, "misses": self.misses}

    def get(self, key: tuple | None, make: Callable[[], EncodedVideo]) -> tuple[EncodedVideo, bool]:
        if key is None or self.capacity == 0:
            return make(), False
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return self._entries[key], True
            try:
                value = make()
            finally:
                with self._lock:
                    self._key_locks.pop(key, None)
            with self._lock:
                self.misses += 1
                self._entries[key] = value
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
        return value, False


_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256: a file is read once per change
_DIGESTS_LOCK = threading.Lock()
MAX_DIGESTS = 1024


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (of a folder of frames: of its files' names and bytes), remembered
    while the file's size, modification time and inode stay the same."""
    stat = os.stat(path)
    stamp = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    with _DIGESTS_LOCK:
        if stamp in _DIGESTS:
            return _DIGESTS[stamp]
    digest = hashlib.sha256()
    files = [os.path.join(path, name) for name in sorted(os.listdir(path))] if os.path.isdir(path) else [path]
    for name in files:
        if os.path.isdir(path):
            digest.update(os.path.basename(name).encode() + b"\0")
        with open(name, "rb") as f:
            while chunk := f.read(DIGEST_CHUNK):
                digest.update(chunk)
    with _DIGESTS_LOCK:
        if len(_DIGESTS) >= MAX_DIGESTS:
            _DIGESTS.clear()
        _DIGESTS[stamp] = digest.hexdigest()
    return _DIGESTS[stamp]


def clip_digest(clip: "SampledFrames") -> str:
    """sha256 of a decoded clip's frames and timestamps (frames at model size: a few MB)."""
    digest = hashlib.sha256(repr((clip.frames.shape, list(clip.timestamps))).encode())
    digest.update(clip.frames.tobytes())
    return digest.hexdigest()


def cache_key(digest: str, options: VideoOptions, geometry: Hashable) -> tuple | None:
    """The key an encoding is cached under (the content, the options, how frames are fitted to the
    tower), or None when it must not be cached (unseeded random sampling)."""
    if options.strategy == "random" and options.seed is None:
        return None
    return (digest, options, geometry)
