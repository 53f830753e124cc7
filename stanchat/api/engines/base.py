"""What an engine is given (`Job`) and gives back (`Result`), and the `Engine` interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from threading import Event
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class Sampling:
    """The OpenAI API's sampling fields, checked (see `stanchat.api.protocol`)."""

    max_tokens: int = 256  # new tokens at most
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0  # nucleus sampling mass (only when temperature > 0)
    seed: int | None = None  # makes sampling repeatable; such a request runs in a batch of its own
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Job:
    """One request for the LLM: its prompt, the video's projected tokens and how to sample."""

    prompt_ids: list[int]  # the chat-template prompt with ONE image placeholder for the video
    features: torch.Tensor  # (1, N, E) the projected video tokens that replace the placeholder
    sampling: Sampling
    on_text: Callable[[str], None] | None = None  # called with each new piece of answer text (streaming)
    cancelled: Event = field(default_factory=Event)  # set it to stop generating (client went away)


@dataclass
class Result:
    text: str  # the answer, without the stop string that ended it
    completion_tokens: int  # new tokens generated (the stop string's tokens included)
    finish_reason: str  # "stop" (end of answer or a stop string) or "length" (max_tokens reached)


class Engine:
    """Runs jobs; `generate` blocks its calling thread and may batch it with other callers' jobs."""

    name = "engine"

    def generate(self, job: Job) -> Result:
        raise NotImplementedError

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


class TextTracker:
    """Turns a growing list of token ids into answer text pieces, ending at a stop string.

    `add(token)` returns True once the answer is over (a stop string appeared). The text handed
    to `on_text` never includes a stop string nor a prefix of one that might still complete, and
    `"".join(pieces) == result.text` with surrounding whitespace stripped.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: tuple[str, ...],
                 on_text: Callable[[str], None] | None):
        self.decode = decode
        self.stop = stop
        self.on_text = on_text
        self.ids: list[int] = []
        self.text = ""  # the answer so far, stop string cut off
        self.sent = 0  # characters of the stripped answer given to on_text
        self.stopped = False

    def add(self, token: int) -> bool:
        self.ids.append(token)
        text = self.decode(self.ids)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return True
        self.text = text
        hold = max((len(s) - 1 for s in self.stop), default=0)  # a stop string may be starting
        self._emit(text[:len(text) - hold] if hold else text, final=False)
        return False

    def finish(self) -> str:
        """The whole answer (stripped); sends what was held back."""
        self._emit(self.text, final=True)
        return self.text.strip()

    def _emit(self, text: str, final: bool) -> None:
        # trailing whitespace (and a half-decoded character) waits for more text
        body = text.strip() if final else text.strip().rstrip("\ufffd")
        if self.on_text is not None and len(body) > self.sent:
            self.on_text(body[self.sent:])
        self.sent = max(self.sent, len(body))
