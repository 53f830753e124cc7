"""Who runs the LLM once stanchat has encoded the video: a registry of engines behind `Engine`.

`transformers` (the default) batches concurrent requests into one padded `generate` in this
process; `vllm` hands the projected video tokens to vLLM's LLaVA as image embeddings (continuous
batching, paged KV cache, tensor parallelism). Both take a `Job` and return a `Result`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stanchat.errors import StanchatError

if TYPE_CHECKING:
    from stanchat.api.config import ApiConfig
    from stanchat.api.engines.base import Engine
    from stanchat.chat import VideoChat

ENGINE_NAMES = ("transformers", "vllm")


def create_engine(name: str, chat: "VideoChat", config: "ApiConfig") -> "Engine":
    """The engine called `name`, built around the loaded `chat` (raises listing valid names)."""
    if name == "transformers":
        from stanchat.api.engines.hf import TransformersEngine

        return TransformersEngine(chat, max_batch=config.max_batch, batch_wait_ms=config.batch_wait_ms)
    if name == "vllm":
        from stanchat.api.engines.vllm import VllmEngine

        return VllmEngine(chat, tensor_parallel_size=config.tensor_parallel_size, kv_cache_gib=config.kv_cache_gib,
                          gpu_memory_utilization=config.gpu_memory_utilization)
    raise StanchatError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
