"""What an engine is given (`Job`: prompt ids, video tokens, `Sampling`) and gives back (`Result`),
and the `Engine` interface every engine implements. No torch import here: the API's request parser
and `--help` use `Sampling`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from threading import Event
from typing import TYPE_CHECKING, Any, Callable

from stanchat.errors import StanchatError
from stanchat.options import DEFAULTS

if TYPE_CHECKING:
    from concurrent.futures import Future

    import torch

MAX_SEED = 2**63 - 1  # torch.manual_seed and vLLM take a signed 64-bit seed
MAX_STOP_STRINGS = 4  # as OpenAI's API
MAX_TOP_P = 1.0


@dataclass(frozen=True)
class Sampling:
    """How an answer is generated; checked when made (each error names its field, `param`)."""

    max_tokens: int = DEFAULTS.max_new_tokens  # new tokens at most
    temperature: float = DEFAULTS.temperature  # 0: greedy
    top_p: float = DEFAULTS.top_p  # nucleus sampling mass (only when temperature > 0)
    seed: int | None = None  # makes sampling repeatable; such a job runs in a batch of its own
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise _invalid("max_new_tokens", f"must be at least 1, got {self.max_tokens!r}")
        if not _finite(self.temperature) or self.temperature < 0:
            raise _invalid("temperature", f"must be >= 0 (0 is greedy), got {self.temperature!r}")
        if not _finite(self.top_p) or not 0 < self.top_p <= MAX_TOP_P:
            raise _invalid("top_p", f"must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed <= MAX_SEED):
            raise _invalid("seed", f"must be a whole number from 0 to {MAX_SEED}, got {self.seed!r}")
        if len(self.stop) > MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in self.stop):
            raise _invalid("stop", f"takes up to {MAX_STOP_STRINGS} non-empty strings, got {list(self.stop)!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _invalid(param: str, problem: str) -> StanchatError:
    """A sampling value out of range, about `param`."""
    return StanchatError(lambda w: f"{w.name(param)} {problem}", param=param)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Job:
    """One answer to generate: its prompt, the video's projected tokens and how to sample."""

    prompt_ids: list[int]  # the chat-template prompt with one video placeholder per block (the engine expands them)
    features: "torch.Tensor"  # (1, N, E) the projected video tokens that replace the placeholders, in order
    sampling: Sampling
    # tokens each placeholder stands for, in prompt order (summing to N); () is one block of all N
    blocks: tuple[int, ...] = ()
    on_text: Callable[[str], None] | None = None  # called with each new piece of answer text (streaming)
    cancelled: Event = field(default_factory=Event)  # set it to stop generating (a Stop button, a client gone)

    @property
    def block_sizes(self) -> tuple[int, ...]:
        """Video tokens per placeholder, in prompt order."""
        return self.blocks or (int(self.features.shape[1]),)


@dataclass
class Result:
    text: str  # the answer, stripped, without the stop string that ended it
    completion_tokens: int  # new tokens generated (a stop string's tokens included)
    finish_reason: str  # "stop" (end of answer, a stop string, or cancelled) or "length" (max_tokens reached)
    prefill: float = 0.0  # seconds from the start of its generate to the first new token
    generate: float = 0.0  # seconds from the first new token to the end


class Engine:
    """Runs jobs. `submit` starts one and returns its `Future` (of a `Result`); `generate` blocks its
    calling thread until the result. An engine may batch jobs from many callers."""

    name = "engine"

    def submit(self, job: Job) -> "Future[Result]":
        raise NotImplementedError

    def generate(self, job: Job) -> Result:
        return self.submit(job).result()

    def generate_many(self, jobs: list[Job]) -> list[Result]:
        """Results of `jobs` in order, run as the engine batches concurrent callers."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
            return list(pool.map(self.generate, jobs))

    def info(self) -> dict[str, Any]:
        """What /health reports about the engine."""
        return {"engine": self.name}

    def close(self) -> None:
        """Stop background workers."""
