"""A conversation about one encoded video: the history reaches the prompt, the engine answers.

`Session` is made by `VideoChat.session` (see `stanchat.chat`) from an `EncodedVideo`; every
question becomes a `Job` (`stanchat.engine.prompt.make_job`: the processor's chat template, the
context check) that the chat's engine answers, so a session's answer is the same as the API's or a
batch's for the same question. Later questions cost one LLM prefill + generation. Under
`--select question` every question chooses its own frames among the video's candidates (decoded
and scored once): a question about another event re-encodes, one about the same frames does not.
"""

from __future__ import annotations

import queue
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from stanchat.engine.base import Job, Result, Sampling
from stanchat.engine.prompt import make_job, prompt_text
from stanchat.options import DEFAULTS

if TYPE_CHECKING:
    from concurrent.futures import Future

    from stanchat.chat import VideoChat
    from stanchat.encoding import EncodedVideo
    from stanchat.options import VideoOptions
    from stanchat.selection import Candidates


@dataclass
class Answer:
    """One answer and what it cost."""

    text: str  # the model's answer, stripped of surrounding whitespace
    video: str  # the video it is about (its path)
    frames: int  # frames sampled from the video
    timestamps: list[float]  # seconds into the video of each sampled frame
    video_tokens: int  # video tokens the LLM read
    temporal: str  # stan | mean | concat | segments
    model: str  # preset name, or the overriding LLaVA and STAN
    finish_reason: str = "stop"  # "stop" (end of answer, a stop string, or stopped) or "length" (max_new_tokens)
    # seconds: decode (sampling, decoding, preprocessing), vision (tower, STAN, projector), select (scoring the
    # candidates against the question), prefill, generate, and total (all of these and the prompt):
    # decode, vision and select only in the turn that paid for them
    timings: dict[str, float] = field(default_factory=dict)
    weights: list[float] | None = None  # select=question: each used frame's Mug weight for the question
    spans: list[list[float]] | None = None  # temporal segments: [start, end] seconds of each window

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`stanchat ask --json`)."""
        return {"answer": self.text, **{k: v for k, v in asdict(self).items() if k != "text"}}


def sampling_of(max_new_tokens: int = DEFAULTS.max_new_tokens, temperature: float = DEFAULTS.temperature,
                top_p: float = DEFAULTS.top_p, seed: int | None = None, stop: tuple[str, ...] | list[str] = ()) -> Sampling:
    """The library's sampling keywords as the engine's `Sampling` (checked)."""
    return Sampling(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=tuple(stop))


class Session:
    """A multi-turn conversation about one video.

    Attributes: `chat` (the `VideoChat`), `encoded` (the `EncodedVideo` of the last question; None
    before the first under select=question), `options`, `video` (its `SampledFrames`: the candidates
    before the first question under select=question), `temporal`, `frames` (T), `video_tokens` (N),
    `history` (list of (question, answer) pairs that reach the next prompt).

    `select` (select=question only): the options, the video's `Candidates` and the function that
    encodes the frames a question is about; then every question selects again.
    """

    def __init__(self, chat: "VideoChat", encoded: "EncodedVideo | None", history: list[tuple[str, str]] | None = None,
                 select: "tuple[VideoOptions, Candidates, Callable[[str], EncodedVideo]] | None" = None):
        self.chat = chat
        self.encoded = encoded
        self.history: list[tuple[str, str]] = list(history or [])
        self._select = select
        self.options = encoded.options if encoded is not None else select[0]
        # what the next answer paid for: the encoding (or the candidates), once
        if encoded is not None:
            self._pending_setup = {"decode": encoded.decode_seconds, "vision": encoded.vision_seconds, "select": 0.0}
        else:
            candidates = select[1]
            self._pending_setup = {"decode": candidates.decode_seconds, "vision": 0.0,
                                   "select": candidates.score_seconds}

    @property
    def video(self):
        """The sampled `SampledFrames` (the candidates, before the first question under select=question)."""
        return self.encoded.clip if self.encoded is not None else self._select[1].clip

    @property
    def temporal(self) -> str:
        return self.options.temporal

    @property
    def frames(self) -> int:
        """T: frames sampled from the video (asked, before the first question under select=question)."""
        return self.encoded.frames if self.encoded is not None else self.options.frames

    @property
    def video_tokens(self) -> int:
        """N: video tokens the LLM reads."""
        return self.encoded.video_tokens if self.encoded is not None else self.chat.token_count(self.options)

    @property
    def features(self):
        """The projected video features (1, N, E)."""
        return self.encoded.features

    def reset(self) -> None:
        """Forget the conversation; keep the encoded video."""
        self.history.clear()

    def prompt(self, question: str) -> str:
        """The chat-template prompt for `question` after the history, with one `<image>` for the video
        (one per window, after its span, under temporal segments)."""
        spans = self.encoded.spans if self.encoded is not None else None
        return prompt_text(self.chat.processor, self.history, question, spans=spans)

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
        sampling_ = sampling_of(**sampling)
        if self._select is not None:  # this question's frames (cached when the selection repeats)
            self.chat.check_prompt(self.options, question, self.history)
            self.encoded = self._select[2](question)
        encoded = self.encoded
        job, _ = make_job(self.chat.processor, self.chat.context_length, encoded.features, encoded.frames,
                          self.temporal, self.history, question, sampling_, spans=encoded.spans)
        setup, self._pending_setup = self._pending_setup, {"decode": 0.0, "vision": 0.0, "select": 0.0}
        paid_before = sum(setup.values())  # spent before the question arrived (encoding at the session's start)
        if self._select is not None:  # spent since it arrived, on this question's frames
            setup = {"decode": setup["decode"] + encoded.decode_seconds,
                     "vision": setup["vision"] + encoded.vision_seconds,
                     "select": setup["select"] + encoded.select_seconds}
        return _Turn(self, question.strip(), job, setup, started, encoded, paid_before)


@dataclass
class _Turn:
    """A question ready for the engine, and how its answer is recorded."""

    session: Session
    question: str
    job: Job
    setup: dict[str, float]  # decode/vision/select seconds this turn paid for (0 when already encoded)
    started: float  # when the question arrived
    encoded: "EncodedVideo"  # the video tokens this turn reads
    paid_before: float  # seconds of `setup` spent before the question arrived

    def finish(self, result: Result) -> Answer:
        session, encoded = self.session, self.encoded
        session.history.append((self.question, result.text))
        timings = {**self.setup, "prefill": result.prefill, "generate": result.generate}
        # the encoding this turn paid for before the question arrived + everything since
        timings["total"] = self.paid_before + (time.perf_counter() - self.started)
        clip = encoded.clip
        spans = encoded.spans
        return Answer(text=result.text, video=str(clip.path), frames=encoded.frames,
                      timestamps=[float(t) for t in clip.timestamps], video_tokens=encoded.video_tokens,
                      temporal=session.temporal, model=session.chat.name, finish_reason=result.finish_reason,
                      timings=timings, weights=None if encoded.weights is None else list(encoded.weights),
                      spans=None if spans is None else [[a, b] for a, b in spans])


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
