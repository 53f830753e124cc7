"""The `transformers` engine: jobs that arrive together run as one padded `generate`.

A worker thread takes the first waiting job, waits `batch_wait_ms` for others that can share its
`generate` (greedy jobs together; sampling jobs with the same temperature and top_p; a seeded job
alone), and runs them as one left-padded batch of `inputs_embeds`: each prompt's embeddings with
its video placeholder replaced by the video's projected tokens. This is the one way video tokens
enter a transformers LLM in stanchat. Each row stops on its own (end of answer, its stop strings,
its max_tokens, or cancellation); greedy rows give the answers they would give alone
(tests/engine/test_engine.py checks it). A job cancelled before its batch starts is not run.
"""

from __future__ import annotations

import logging
import queue
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from threading import Thread
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from stanchat.engine.base import Engine, Job, Result
from stanchat.engine.text import TextTracker
from stanchat.graft import place_video
from stanchat.options import DEFAULTS

logger = logging.getLogger(__name__)


@dataclass
class _Row:
    """One job inside a running batch."""

    job: Job
    future: Future
    tracker: TextTracker
    done: bool = False
    reason: str = "length"

    def add(self, token: int, eos: set[int]) -> None:
        if self.done:
            return
        if token in eos:
            self.done, self.reason = True, "stop"
        elif self.tracker.add(token):
            self.done, self.reason = True, "stop"
        elif len(self.tracker.ids) >= self.job.sampling.max_tokens:
            self.done, self.reason = True, "length"
        elif self.job.cancelled.is_set():
            self.done, self.reason = True, "stop"


@dataclass
class _Batch:
    rows: list[_Row] = field(default_factory=list)
    eos: set[int] = field(default_factory=set)
    first_token_at: float | None = None  # when generate handed over the first new tokens (the prefill's end)


class _RowStreamer(BaseStreamer):
    """Hands each step's (B,) new tokens to the batch's rows (the prompt's put is skipped)."""

    def __init__(self, batch: _Batch):
        self.batch = batch

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:  # the prompt (B, S): with inputs_embeds only, not tokens of the answer
            return
        if self.batch.first_token_at is None:  # on CUDA the .tolist() below synchronises: the time is real
            self.batch.first_token_at = time.perf_counter()
        for row, token in zip(self.batch.rows, value.tolist()):
            row.add(int(token), self.batch.eos)

    def end(self) -> None:
        pass


class _RowsDone(StoppingCriteria):
    """Row i of the batch stops once its own `_Row` is done."""

    def __init__(self, batch: _Batch):
        self.batch = batch

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.tensor([row.done for row in self.batch.rows], dtype=torch.bool, device=input_ids.device)


def batch_key(job: Job) -> tuple:
    """Jobs with equal keys may share one `generate`."""
    s = job.sampling
    if s.greedy:
        return ("greedy",)
    return ("sample", s.temperature, s.top_p, id(job) if s.seed is not None else None)


class TransformersEngine(Engine):
    """Batched `generate` on a transformers LLaVA (`llava`, with its `processor`), in one worker thread."""

    name = "transformers"

    def __init__(self, llava: Any, processor: Any, max_batch: int = DEFAULTS.batch_size, batch_wait_ms: float = 0.0):
        self.llava = llava
        self.processor = processor
        self.max_batch = max_batch
        self.batch_wait = batch_wait_ms / 1000
        self.batches = 0  # generate calls run
        self.batched_jobs = 0  # jobs they held
        self._queue: queue.Queue = queue.Queue()
        self._held: list[tuple[Job, Future]] = []  # taken from the queue but not fitting the last batch
        self._closed = False
        self._worker = Thread(target=self._loop, name="stanchat-batcher", daemon=True)
        self._worker.start()

    def submit(self, job: Job) -> Future:
        return self._put([job])[0]

    def generate_many(self, jobs: list[Job]) -> list[Result]:
        """Results of `jobs`, which reach the worker together (so they batch whatever the timing)."""
        return [future.result() for future in self._put(jobs)]

    def _put(self, jobs: list[Job]) -> list[Future]:
        if self._closed:
            raise RuntimeError("this engine is closed")
        futures = [Future() for _ in jobs]
        self._queue.put(list(zip(jobs, futures)))
        return futures

    def info(self) -> dict[str, Any]:
        return {"engine": self.name, "max_batch": self.max_batch, "batches": self.batches,
                "batched_requests": self.batched_jobs}

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._worker.join(timeout=10)
        while not self._queue.empty():  # jobs that came in while it closed get an error, not a hang
            for _, future in self._queue.get_nowait() or []:
                future.set_exception(RuntimeError("this engine is closed"))

    def _loop(self) -> None:
        while True:
            items = self._next_batch()
            if items is None:
                return
            try:
                self._run(items)
            except BaseException as err:  # hand the error to every waiting caller
                for _, future in items:
                    if not future.done():
                        future.set_exception(err)

    def _take(self, timeout: float | None) -> tuple[Job, Future] | None:
        """The next waiting job (None: shut down); raises queue.Empty after `timeout` seconds."""
        if not self._held:
            items = self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
            if items is None:
                return None
            self._held.extend(items)
        return self._held.pop(0)

    def _next_batch(self) -> list[tuple[Job, Future]] | None:
        """The first waiting job and those that may join it within `batch_wait` seconds."""
        first = self._take(None)
        if first is None:
            return None
        batch, key, others = [first], batch_key(first[0]), []
        deadline = time.perf_counter() + self.batch_wait
        while len(batch) < self.max_batch and not (key[0] == "sample" and key[-1] is not None):
            try:
                item = self._take(max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # let the loop see the shutdown after this batch
                break
            if batch_key(item[0]) == key:
                batch.append(item)
            else:
                others.append(item)
                if not self._held and self._queue.empty():
                    break
        self._held = others + self._held
        return batch

    def _run(self, items: list[tuple[Job, Future]]) -> None:
        for job, future in items:  # cancelled while waiting: nothing to generate
            if job.cancelled.is_set():
                future.set_result(Result(text="", completion_tokens=0, finish_reason="stop"))
        items = [(job, future) for job, future in items if not future.done()]
        if not items:
            return
        tokenizer = self.processor.tokenizer
        eos = self.llava.generation_config.eos_token_id
        decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)  # noqa: E731
        batch = _Batch(eos=set(eos if isinstance(eos, list) else [eos] if eos is not None else []))
        for job, future in items:
            batch.rows.append(_Row(job, future, TextTracker(decode, job.sampling.stop, job.on_text)))
        embeds, mask = embed_prompts(self.llava, [(job.prompt_ids, job.features, job.block_sizes) for job, _ in items])
        sampling = items[0][0].sampling
        kwargs: dict[str, Any] = {"max_new_tokens": max(job.sampling.max_tokens for job, _ in items),
                                  "do_sample": not sampling.greedy, "pad_token_id": self._pad_id()}
        if not sampling.greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
        self.batches += 1
        self.batched_jobs += len(items)
        started = time.perf_counter()
        with torch.inference_mode():
            self.llava.generate(inputs_embeds=embeds, attention_mask=mask, streamer=_RowStreamer(batch),
                                stopping_criteria=StoppingCriteriaList([_RowsDone(batch)]), **kwargs)
        ended = time.perf_counter()
        first = batch.first_token_at if batch.first_token_at is not None else ended
        for row in batch.rows:
            row.future.set_result(Result(text=row.tracker.finish(), completion_tokens=len(row.tracker.ids),
                                         finish_reason=row.reason, prefill=first - started, generate=ended - first))

    def _pad_id(self) -> int:
        tokenizer = self.processor.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def embed_prompts(llava: Any, rows: list[tuple[list[int], torch.Tensor, tuple[int, ...]]],
                  pad_left: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded prompt embeddings (B, S, E), each row's ids with its video placeholders replaced by its
    projected video tokens (1, N, E), block k of `blocks[k]` tokens at the k-th placeholder
    (`place_video`), and their mask (B, S). Left padding
    for `generate` (new tokens follow every row's last token); right padding for scoring (each
    row's positions start at 0, so a plain forward needs no position ids)."""
    device = llava.get_input_embeddings().weight.device
    image_token_id = llava.config.image_token_id
    embedded = []
    for ids, features, blocks in rows:
        ids = torch.tensor(ids)
        expanded = _expand(ids, ids == image_token_id, blocks)  # (S,) one placeholder per video token
        embedded.append(place_video(llava, expanded[None].to(device), features)[0])  # (S, E)
    length = max(row.shape[0] for row in embedded)
    embeds = embedded[0].new_zeros(len(embedded), length, embedded[0].shape[1])
    mask = torch.zeros(len(embedded), length, dtype=torch.long, device=device)
    for i, row in enumerate(embedded):
        span = slice(length - row.shape[0], length) if pad_left else slice(0, row.shape[0])
        embeds[i, span] = row
        mask[i, span] = 1
    return embeds, mask


def _expand(ids: torch.Tensor, placeholders: torch.Tensor, blocks: tuple[int, ...]) -> torch.Tensor:
    """The prompt with its k-th video placeholder repeated `blocks[k]` times (the text between the
    blocks stays where it is): (S,) -> (S - len(blocks) + sum(blocks),)."""
    at = placeholders.nonzero()[:, 0].tolist()
    if len(at) != len(blocks):
        raise RuntimeError(f"a job's prompt holds {len(at)} video placeholders, expected {len(blocks)}")
    pieces, last = [], 0
    for position, count in zip(at, blocks):
        pieces += [ids[last:position], ids[position:position + 1].repeat(count)]
        last = position + 1
    return torch.cat([*pieces, ids[last:]])
