"""A conversation about one encoded video: the history reaches the prompt, the engine answers.

`Session` is made by `VideoChat.session` (see `stanchat.chat`) from an `EncodedVideo`; every
question becomes a `Job` (`stanchat.engine.prompt.make_job`: the processor's chat template, the
context check) that the chat's engine answers, so a session's answer is the same as the API's or a
batch's for the same question. Later questions cost one LLM prefill + generation.
"""

from __future__ import annotations

import queue
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from stanchat.engine.base import Job, Result, Sampling
from stanchat.engine.prompt import make_job, prompt_text
from stanchat.options import DEFAULTS

if TYPE_CHECKING:
    from concurrent.futures import Future

    from stanchat.chat import VideoChat
    from stanchat.encoding import EncodedVideo


@dataclass
class Answer:
    """One answer and what it cost."""

    text: str  # the model's answer, stripped of surrounding whitespace
    video: str  # the video it is about (its path)
    frames: int  # frames sampled from the video
    timestamps: list[float]  # seconds into the video of each sampled frame
    video_tokens: int  # video tokens the LLM read
    temporal: str  # stan | mean | concat
    model: str  # preset name, or the overriding LLaVA and STAN
    finish_reason: str = "stop"  # "stop" (end of answer, a stop string, or stopped) or "length" (max_new_tokens)
    # seconds: decode (sampling, decoding, preprocessing), vision (tower, STAN, projector), prefill,
    # generate, and total (all of these and the prompt): decode and vision only in the turn that encoded the video
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`stanchat ask --json`)."""
        return {"answer": self.text, **{k: v for k, v in asdict(self).items() if k != "text"}}


def sampling_of(max_new_tokens: int = DEFAULTS.max_new_tokens, temperature: float = DEFAULTS.temperature,
                top_p: float = DEFAULTS.top_p, seed: int | None = None, stop: tuple[str, ...] | list[str] = ()) -> Sampling:
    """The library's sampling keywords as the engine's `Sampling` (checked)."""
    return Sampling(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=tuple(stop))


class Session:
    """A multi-turn conversation about one video.

    Attributes: `chat` (the `VideoChat`), `encoded` (the `EncodedVideo`), `video` (its `SampledFrames`),
    `temporal`, `frames` (T), `video_tokens` (N), `history` (list of (question, answer) pairs that
    reach the next prompt).
    """

    def __init__(self, chat: "VideoChat", encoded: "EncodedVideo", history: list[tuple[str, str]] | None = None):
        self.chat = chat
        self.encoded = encoded
        self.history: list[tuple[str, str]] = list(history or [])
        # what the next answer paid for: the encoding, once
        self._pending_setup = {"decode": encoded.decode_seconds, "vision": encoded.vision_seconds}

    @property
    def video(self):
        """The sampled `SampledFrames`."""
        return self.encoded.clip

    @property
    def temporal(self) -> str:
        return self.encoded.options.temporal

    @property
    def frames(self) -> int:
        """T: frames sampled from the video."""
        return self.encoded.frames

    @property
    def video_tokens(self) -> int:
        """N: video tokens the LLM reads."""
        return self.encoded.video_tokens

    @property
    def features(self):
        """The projected video features (1, N, E)."""
        return self.encoded.features

    def reset(self) -> None:
        """Forget the conversation; keep the encoded video."""
        self.history.clear()

    def prompt(self, question: str) -> str:
        """The chat-template prompt for `question` after the history, with one `<image>` for the video."""
        return prompt_text(self.chat.processor, self.history, question)

    def ask(self, question: str, **sampling: Any) -> Answer:
        """Answer `question` (blocking) and add the turn to the history. `sampling`: max_new_tokens,
        temperature, top_p, seed, stop (`sampling_of`)."""
        turn = self._prepare(question, sampling)
        return turn.finish(self.chat.engine.generate(turn.job))

    def stream(self, question: str, **sampling: Any) -> "Stream":
        """Like `ask`, but returns a `Stream`: iterate it for text pieces as they are generated;
        its `.answer` is set (and the history updated) when iteration ends. Bad input raises here."""
        return Stream(self._prepare(question, sampling))

    def _prepare(self, question: str, sampling: dict[str, Any]) -> "_Turn":
        started = time.perf_counter()
        job, _ = make_job(self.chat.processor, self.chat.context_length, self.features, self.frames, self.temporal,
                          self.history, question, sampling_of(**sampling))
        setup, self._pending_setup = self._pending_setup, {"decode": 0.0, "vision": 0.0}
        return _Turn(self, question.strip(), job, setup, started)


@dataclass
class _Turn:
    """A question ready for the engine, and how its answer is recorded."""

    session: Session
    question: str
    job: Job
    setup: dict[str, float]  # decode/vision seconds this turn paid for (0 when already encoded)
    started: float  # when the question arrived

    def finish(self, result: Result) -> Answer:
        session = self.session
        session.history.append((self.question, result.text))
        timings = {**self.setup, "prefill": result.prefill, "generate": result.generate}
        # the encoding this turn paid for + everything since the question arrived
        timings["total"] = self.setup["decode"] + self.setup["vision"] + (time.perf_counter() - self.started)
        clip = session.video
        return Answer(text=result.text, video=str(clip.path), frames=session.frames,
                      timestamps=[float(t) for t in clip.timestamps], video_tokens=session.video_tokens,
                      temporal=session.temporal, model=session.chat.name, finish_reason=result.finish_reason,
                      timings=timings)


_DONE = object()  # the engine finished the job (or failed)


class Stream:
    """Text pieces of an answer as they are generated (`for piece in stream`).

    The engine starts the job on the first iteration. Pieces never start or end with whitespace the
    final answer does not have: `"".join(stream) == stream.answer.text`. `.answer` is the `Answer`
    once iteration has finished; errors in generation re-raise there. `close()` (from any thread,
    e.g. a Stop button) ends generation after the current token; the answer so far then becomes
    `.answer`. Leaving the loop early (`break`, Ctrl-C) stops generation and records no answer.
    """

    def __init__(self, turn: _Turn):
        self.session = turn.session
        self.answer: Answer | None = None
        self._turn = turn
        self._pieces: queue.Queue = queue.Queue()
        turn.job.on_text = self._pieces.put
        self._started = False

    def close(self) -> None:
        """Stop generating after the current token."""
        self._turn.job.cancelled.set()

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a Stream can be iterated only once")
        self._started = True
        future: Future = self.session.chat.engine.submit(self._turn.job)
        future.add_done_callback(lambda _: self._pieces.put(_DONE))
        finished = False
        try:
            while (piece := self._pieces.get()) is not _DONE:
                yield piece
            finished = True
        finally:  # also on `break` or Ctrl-C: stop the engine's work rather than let it run on unseen
            if not finished:
                self._turn.job.cancelled.set()
        self.answer = self._turn.finish(future.result())
