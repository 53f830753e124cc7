"""A conversation about one video: the encoded video is cached, the history reaches the prompt.

`Session` is made by `VideoChat.session` (see `stanchat.chat`) from the model's parts (the LLaVA,
its processor, the graft) and a decoded video; it calls the graft itself and owns the context
check, so nothing here calls back into `VideoChat`. The first question checks its prompt against
the LLM's context and then encodes the video once, so
every later question costs one LLM prefill + generation. The prompt is the LLaVA processor's own
chat template with the video as its single `<image>` placeholder, expanded to exactly
`Graft.token_count(...)` tokens and checked against the features before `generate` sees them.
The features reach `generate` through `mm_encoder_outputs`, transformers' hook for pre-encoded
images, so LLaVA's classes run unchanged.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from threading import Event, Thread
from typing import Any, Iterator

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer
from transformers.generation.streamers import BaseStreamer

from stanchat.errors import StanchatError
from stanchat.graft import Graft, encoder_outputs
from stanchat.options import DEFAULTS, check_question
from stanchat.video import VideoClip

DECODE_KWARGS = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}


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
    timings: dict[str, float] = field(default_factory=dict)  # seconds: decode, vision, prefill, generate, total

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`stanchat ask --json`)."""
        return {"answer": self.text, **{k: v for k, v in asdict(self).items() if k != "text"}}


class _TokenClock(BaseStreamer):
    """Notes when `generate` hands over its first new token (the end of the prefill), and passes
    every call on to an optional inner streamer. `generate` first puts the prompt, then each step's
    token; on CUDA the `.cpu()` before each put synchronises, so the times are real."""

    def __init__(self, inner: BaseStreamer | None = None):
        self.inner = inner
        self.prompt_seen = False
        self.first_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if self.prompt_seen and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.prompt_seen = True
        if self.inner is not None:
            self.inner.put(value)

    def end(self) -> None:
        if self.inner is not None:
            self.inner.end()


@dataclass
class _Turn:
    """A question ready for `generate`, and the record of running it."""

    question: str
    inputs: dict[str, Any]  # input_ids, attention_mask, mm_encoder_outputs
    generate_kwargs: dict[str, Any]
    setup: dict[str, float]  # decode/vision seconds this turn paid for (0 when cached)
    started: float = 0.0
    output_ids: torch.Tensor | None = None  # (new tokens,)
    prefill: float = 0.0
    generate: float = 0.0


@dataclass
class DecodedVideo:
    """A video's sampled frames, preprocessed and placed for the tower."""

    clip: VideoClip  # the decoded frames and their timestamps
    pixel_values: torch.Tensor  # (1, T, 3, H, W) on the tower's device and dtype
    seconds: float  # decoding + preprocessing time


@dataclass(frozen=True)
class ChatModel:
    """The parts of a loaded model a conversation uses: the LLaVA, its processor, the graft, and
    the name answers report."""

    llava: Any  # transformers LlavaForConditionalGeneration (or LlavaNext...)
    processor: Any  # its processor: tokenizer, image processor, chat template
    graft: Graft
    name: str

    @property
    def image_token_id(self) -> int:
        return self.llava.config.image_token_id

    @property
    def context_length(self) -> int:
        """The LLM's context in tokens (`max_position_embeddings`)."""
        return self.llava.config.text_config.max_position_embeddings

    @property
    def input_device(self) -> torch.device:
        """Where `generate` wants its input ids: the device of the token embedding."""
        return self.llava.get_input_embeddings().weight.device


def check_context(prompt_tokens: int, limit: int, video_tokens: int, temporal: str, frames: int) -> None:
    """Refuse a prompt longer than the LLM's `limit`-token context, naming a frame count that would fit."""
    if prompt_tokens <= limit:
        return
    if temporal == "concat":
        per_frame = video_tokens // frames
        fit = (limit - (prompt_tokens - video_tokens)) // per_frame
        fewer = f"--frames {fit} or fewer, or " if fit >= 1 else ""
        raise StanchatError(
            f"--temporal concat with {frames} frames needs {prompt_tokens} tokens ({video_tokens} for the video), "
            f"more than the LLM's {limit}-token context; use {fewer}--temporal stan ({per_frame} video tokens "
            f"for any number of frames)")
    raise StanchatError(f"the prompt needs {prompt_tokens} tokens, more than the LLM's {limit}-token context; "
                        f"reset the conversation or ask a shorter question")


def encode(graft: Graft, pixel_values: torch.Tensor, temporal: str) -> tuple[torch.Tensor, float]:
    """The graft's projected video features (1, N, E) and the seconds they took (device work included)."""
    start = time.perf_counter()
    features = graft.features(pixel_values, temporal)
    if features.device.type == "cuda":  # CUDA runs asynchronously: wait, so the time is the work's
        torch.cuda.synchronize(features.device)
    return features, time.perf_counter() - start


class Session:
    """A multi-turn conversation about one video.

    Attributes: `model` (a `ChatModel`), `video` (the decoded `VideoClip`), `temporal`,
    `video_tokens` (N), `history` (list of (question, answer) pairs that reach the next prompt).
    `features` ((1, N, E)) are computed by the first question and cached.
    """

    def __init__(self, model: ChatModel, decoded: DecodedVideo, temporal: str,
                 history: list[tuple[str, str]] | None = None):
        self.model = model
        self.video = decoded.clip
        self.temporal = temporal
        self.history: list[tuple[str, str]] = list(history or [])
        _, num_frames, _, height, width = decoded.pixel_values.shape
        self.video_tokens = model.graft.token_count(temporal, num_frames, height, width)  # N
        self._pixel_values: torch.Tensor | None = decoded.pixel_values  # dropped once encoded
        self._features: torch.Tensor | None = None
        self._pending_setup = {"decode": decoded.seconds, "vision": 0.0}  # what the next answer paid for

    @property
    def frames(self) -> int:
        """T: frames sampled from the video."""
        return int(self.video.frames.shape[0])

    @property
    def features(self) -> torch.Tensor:
        """The projected video features (1, N, E), encoded on first use."""
        if self._features is None:
            self._features, self._pending_setup["vision"] = encode(self.model.graft, self._pixel_values, self.temporal)
            self._pixel_values = None
        return self._features

    def reset(self) -> None:
        """Forget the conversation; keep the encoded video."""
        self.history.clear()

    def prompt(self, question: str) -> str:
        """The chat-template prompt for `question` after the history, with one `<image>` for the video."""
        conversation = []
        for i, (q, a) in enumerate([*self.history, (question, None)]):
            content = ([{"type": "image"}] if i == 0 else []) + [{"type": "text", "text": q}]
            conversation.append({"role": "user", "content": content})
            if a is not None:
                conversation.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
        return self.model.processor.apply_chat_template(conversation, add_generation_prompt=True)

    def ask(self, question: str, max_new_tokens: int = DEFAULTS.max_new_tokens,
            temperature: float = DEFAULTS.temperature, **generate_kwargs: Any) -> Answer:
        """Answer `question` (blocking) and add the turn to the history."""
        turn = self._prepare(question, max_new_tokens, temperature, generate_kwargs)
        _run_generate(self.model.llava, turn, streamer=None)
        return self._finish(turn)

    def stream(self, question: str, max_new_tokens: int = DEFAULTS.max_new_tokens,
               temperature: float = DEFAULTS.temperature, **generate_kwargs: Any) -> "Stream":
        """Like `ask`, but returns a `Stream`: iterate it for text pieces as they are generated;
        its `.answer` is set (and the history updated) when iteration ends. Bad input raises here."""
        return Stream(self, self._prepare(question, max_new_tokens, temperature, generate_kwargs))

    def _prepare(self, question: str, max_new_tokens: int, temperature: float, extra: dict[str, Any]) -> _Turn:
        question = check_question(question)
        if max_new_tokens < 1:
            raise StanchatError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
        if temperature < 0:
            raise StanchatError(f"--temperature must be >= 0 (0 is greedy), got {temperature}")
        started = time.perf_counter()
        input_ids = self._tokenize(self.prompt(question))
        check_context(input_ids.shape[1], self.model.context_length, self.video_tokens, self.temporal, self.frames)
        features = self.features  # encodes the video on the first question, after the check
        if features.shape[1] != self.video_tokens:
            raise RuntimeError(f"{features.shape[1]} video features for {self.video_tokens} placeholders")
        tokenizer = self.model.processor.tokenizer
        kwargs = {"max_new_tokens": max_new_tokens, "do_sample": temperature > 0,
                  "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id}
        if temperature > 0:
            kwargs["temperature"] = temperature
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            # one image's features, (N, E): transformers' pre-encoded image input
            "mm_encoder_outputs": encoder_outputs([features[0]]),
        }
        setup, self._pending_setup = self._pending_setup, {"decode": 0.0, "vision": 0.0}
        return _Turn(question, inputs, {**kwargs, **extra}, setup, started=started)

    def _tokenize(self, prompt: str) -> torch.Tensor:
        """Expand the one video placeholder to N tokens and tokenize; (1, S) on the LLM's input device."""
        processor = self.model.processor
        token = processor.image_token
        if prompt.count(token) != 1:
            raise StanchatError(f"the chat template put {prompt.count(token)} {token} placeholders in the prompt, "
                                f"expected 1; does a question contain {token!r}?")
        text = prompt.replace(token, token * self.video_tokens)
        tokenizer = processor.tokenizer
        # a template that writes BOS itself must not get a second one (as the processor does)
        add_special = not (tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token))
        input_ids = tokenizer(text, return_tensors="pt", add_special_tokens=add_special)["input_ids"]
        placeholders = int((input_ids == self.model.image_token_id).sum())
        if placeholders != self.video_tokens:
            raise RuntimeError(f"prompt holds {placeholders} video placeholders, the graft counts {self.video_tokens}")
        return input_ids.to(self.model.input_device)

    def _finish(self, turn: _Turn) -> Answer:
        text = self.model.processor.tokenizer.decode(turn.output_ids, **DECODE_KWARGS).strip()
        self.history.append((turn.question, text))
        timings = {**turn.setup, "prefill": turn.prefill, "generate": turn.generate}
        # decoding (when this turn paid for it) + everything since the question arrived, vision included
        timings["total"] = turn.setup["decode"] + (time.perf_counter() - turn.started)
        return Answer(text=text, video=str(self.video.path), frames=self.frames,
                      timestamps=[float(t) for t in self.video.timestamps], video_tokens=self.video_tokens,
                      temporal=self.temporal, model=self.model.name, timings=timings)


def _run_generate(llava: Any, turn: _Turn, streamer: BaseStreamer | None) -> None:
    """Run `generate` for a prepared turn, recording the new tokens and the prefill/decode split."""
    clock = _TokenClock(streamer)
    start = time.perf_counter()
    with torch.inference_mode():
        output = llava.generate(**turn.inputs, **turn.generate_kwargs, streamer=clock)
    end = time.perf_counter()
    turn.output_ids = output[0, turn.inputs["input_ids"].shape[1]:].cpu()
    first = clock.first_token_at if clock.first_token_at is not None else end
    turn.prefill, turn.generate = first - start, end - first


class _StopWhenSet(StoppingCriteria):
    """Ends generation (after the current token) once `event` is set, from any thread."""

    def __init__(self, event: Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Stream:
    """Text pieces of an answer as they are generated (`for piece in stream`).

    Generation runs in a background thread started by the first iteration. Pieces never start or
    end with whitespace the final answer does not have: `"".join(stream) == stream.answer.text`.
    `.answer` is the `Answer` once iteration has finished; errors in generation re-raise there.
    `close()` (from any thread, e.g. a Stop button) ends generation early; the answer so far then
    becomes `.answer`. Leaving the loop early (`break`) stops generation and records no answer.
    """

    def __init__(self, session: Session, turn: _Turn):
        self.session = session
        self.answer: Answer | None = None
        self._turn = turn
        self._text = TextIteratorStreamer(session.model.processor.tokenizer, skip_prompt=True, **DECODE_KWARGS)
        self._stop = Event()
        criteria = StoppingCriteriaList(turn.generate_kwargs.get("stopping_criteria", []))
        criteria.append(_StopWhenSet(self._stop))
        turn.generate_kwargs["stopping_criteria"] = criteria
        self._error: BaseException | None = None
        self._started = False

    def close(self) -> None:
        """Stop generating after the current token."""
        self._stop.set()

    def _worker(self) -> None:
        try:
            _run_generate(self.session.model.llava, self._turn, self._text)
        except BaseException as err:  # re-raised in the consumer's thread
            self._error = err
            self._text.end()

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a Stream can be iterated only once")
        self._started = True
        thread = Thread(target=self._worker, name="stanchat-generate", daemon=True)
        thread.start()
        try:
            yield from _trimmed(self._text)
        finally:  # also on `break`: stop the worker rather than let it run on unseen
            self._stop.set()
            thread.join()
        if self._error is not None:
            raise self._error
        self.answer = self.session._finish(self._turn)


def _trimmed(pieces: Iterator[str]) -> Iterator[str]:
    """The pieces, without leading whitespace and holding trailing whitespace back until more text
    follows, so that their concatenation is the stripped full text."""
    emitted, pending = False, ""
    for piece in pieces:
        text = pending + (piece if emitted else piece.lstrip())
        body = text.rstrip()
        pending = text[len(body):]
        if body:
            emitted = True
            yield body
