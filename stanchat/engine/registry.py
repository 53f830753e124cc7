"""Who runs the LLM once stanchat has encoded the video: the registry of engines behind `Engine`.

`transformers` (the default) batches concurrent jobs into one padded `generate` in this process;
`vllm` hands the projected video tokens to vLLM's LLaVA as image embeddings (continuous batching,
paged KV cache, tensor parallelism). Both take a `Job` and return a `Result`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stanchat.errors import StanchatError

if TYPE_CHECKING:
    from stanchat.engine.base import Engine

ENGINE_NAMES = ("transformers", "vllm")


def create_engine(name: str, llava: Any, processor: Any, **settings: Any) -> "Engine":
    """The engine called `name` around a loaded LLaVA and its processor; `settings` are that engine's
    keywords (transformers: max_batch, batch_wait_ms; vllm: tensor_parallel_size, kv_cache_gib,
    gpu_memory_utilization). Raises listing the valid names."""
    if name == "transformers":
        from stanchat.engine.hf import TransformersEngine  # torch and transformers load here, not at --help

        return TransformersEngine(llava, processor, **settings)
    if name == "vllm":
        from stanchat.engine.vllm import VllmEngine

        return VllmEngine(llava, processor, **settings)
    raise StanchatError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}", param="engine")
