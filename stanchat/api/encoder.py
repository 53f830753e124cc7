"""Decode + tower + STAN + projector for the server, with a bounded cache of encoded videos.

The cache key is the file's content hash and the options that change the tokens (frames,
temporal mode, fps, time window), so a follow-up question about the same video, sent again as a
data URL or named again by path, skips decoding and the tower. One lock per key: concurrent
requests for one video encode it once. A spooled data-URL file is deleted once encoded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stanchat.api.errors import ApiError
from stanchat.api.media import Media
from stanchat.errors import StanchatError

if TYPE_CHECKING:
    import torch

    from stanchat.chat import VideoChat

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoOptions:
    """stanchat's own request fields (see `stanchat.api.protocol`)."""

    frames: int = 16  # frames sampled (strategy fps: at most this many)
    temporal: str = "stan"  # stan | mean | concat
    fps: float | None = None  # sample every 1/fps seconds instead of uniformly
    start: float | None = None  # only sample the window [start, end) seconds
    end: float | None = None


@dataclass(frozen=True)
class Encoded:
    features: "torch.Tensor"  # (1, N, E) projected video tokens
    frames: int  # T frames sampled
    timestamps: tuple[float, ...]  # seconds of each frame
    duration: float  # the source's length in seconds
    seconds: float  # decode + vision time paid when it was encoded


class VideoEncoder:
    """`encode(media, options)` -> (`Encoded`, cache hit?)."""

    def __init__(self, chat: "VideoChat", cache_size: int = 32, max_video_seconds: float = 600.0,
                 spool_owned: str | None = None):
        self.chat = chat
        self.cache_size = cache_size
        self.max_video_seconds = max_video_seconds
        self.spool_owned = spool_owned  # files under this folder are ours to delete once encoded
        self.hits = self.misses = 0
        self._cache: OrderedDict[tuple, Encoded] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._cache), "capacity": self.cache_size, "hits": self.hits, "misses": self.misses}

    def encode(self, media: Media, options: VideoOptions) -> tuple[Encoded, bool]:
        if media.kind == "image":
            options = VideoOptions(frames=1, temporal=options.temporal)
        key = (media.sha256, options)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    self.hits += 1
                    self._drop_spooled(media)
                    return self._cache[key], True
            encoded = self._encode(media, options)
            with self._lock:
                self.misses += 1
                if self.cache_size:
                    self._cache[key] = encoded
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
                self._key_locks.pop(key, None)
        return encoded, False

    def _encode(self, media: Media, options: VideoOptions) -> Encoded:
        from stanchat.options import check_temporal
        from stanchat.video import load_video

        start = time.perf_counter()
        try:
            check_temporal(options.temporal)
            # the probe checks the length sampled (the window, if given) before any frame is decoded
            clip = load_video(media.path, frames=options.frames, strategy="fps" if options.fps else "uniform",
                              fps=options.fps, start=options.start, end=options.end,
                              max_seconds=self.max_video_seconds)
            decoded = self.chat.decode(clip, frames=len(clip.timestamps))
            features, _ = self.chat.features(decoded.pixel_values, options.temporal)
        except StanchatError as err:
            raise ApiError(400, self._public(str(err), media), param="messages") from err
        finally:
            self._drop_spooled(media)
        return Encoded(features=features, frames=len(clip.timestamps), timestamps=tuple(clip.timestamps),
                       duration=clip.duration, seconds=time.perf_counter() - start)

    def _public(self, message: str, media: Media) -> str:
        """`message` as a client may see it: the file called what the client called it, no server path."""
        message = message.replace(media.path, media.label)
        if self.spool_owned is not None:
            message = message.replace(self.spool_owned, "(upload folder)")
        return message

    def _drop_spooled(self, media: Media) -> None:
        import os

        if self.spool_owned is not None and os.path.dirname(media.path) == self.spool_owned:
            try:
                os.remove(media.path)
            except FileNotFoundError:
                pass
