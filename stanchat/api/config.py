"""The API server's settings: one dataclass, one default per value (`stanchat api --help` shows them)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from stanchat.engine.registry import ENGINE_NAMES as ENGINES
from stanchat.engine.vllm import CPU_KV_CACHE_GIB
from stanchat.errors import StanchatError
from stanchat.options import DEFAULTS

LOCALHOST = "127.0.0.1"
DEFAULT_PORT = 8000
API_KEY_ENV = "STANCHAT_API_KEY"  # the key clients must send as `Authorization: Bearer KEY`
APP_PATH = "/app"  # where --with-app mounts the Gradio chat app


@dataclass(frozen=True)
class ApiConfig:
    engine: str = "transformers"  # who runs the LLM: one of ENGINES
    api_key: str | None = None  # None: no authentication (fine on 127.0.0.1)
    allowed_local_media_path: str | None = None  # folder whose files a request may name; None: none
    max_request_bytes: int = 64 * 1024 * 1024  # larger request bodies get 413 (a base64 video is ~4/3 its size)
    max_video_seconds: float = 600.0  # longer videos get 400
    max_pending: int = 64  # requests inside the server at once (waiting or running); more get 429
    max_batch: int = DEFAULTS.batch_size  # requests one `generate` may run together (transformers engine; 1: one at a time)
    batch_wait_ms: float = 5.0  # how long the batching worker waits for more requests to join a batch
    cache_size: int = 32  # encoded videos kept (LRU), keyed by content hash and video options
    tensor_parallel_size: int = 1  # GPUs vLLM splits the LLM over (--engine vllm)
    kv_cache_gib: float | None = None  # vLLM's KV cache; None: vLLM's default on a GPU, CPU_KV_CACHE_GIB on the CPU
    gpu_memory_utilization: float | None = None  # share of the GPU vLLM may fill (0-1]; None: vLLM's default

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise StanchatError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        for name in ("max_request_bytes", "max_pending", "max_batch", "tensor_parallel_size"):
            if getattr(self, name) < 1:
                raise StanchatError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.cache_size < 0 or self.batch_wait_ms < 0 or self.max_video_seconds <= 0:
            raise StanchatError("--cache-size and --batch-wait-ms must be >= 0 and --max-video-seconds > 0")
        if self.kv_cache_gib is not None and not self.kv_cache_gib > 0:
            raise StanchatError(f"--kv-cache-gib must be > 0, got {self.kv_cache_gib}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise StanchatError(f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.allowed_local_media_path is not None and not os.path.isdir(self.allowed_local_media_path):
            raise StanchatError(f"--allowed-local-media-path {self.allowed_local_media_path} is not a folder")


    def engine_settings(self) -> dict:
        """The chosen engine's keywords (`stanchat.engine.create_engine`)."""
        if self.engine == "transformers":
            return {"max_batch": self.max_batch, "batch_wait_ms": self.batch_wait_ms}
        return {"tensor_parallel_size": self.tensor_parallel_size, "kv_cache_gib": self.kv_cache_gib,
                "gpu_memory_utilization": self.gpu_memory_utilization}


def api_key_from_env(given: str | None) -> str | None:
    """The key from `--api-key`, else from STANCHAT_API_KEY, else None (no authentication)."""
    return given or os.environ.get(API_KEY_ENV) or None
