"""Multiple choice by likelihood: how likely each answer is, given a video and a question.

`score_answers(chat, requests)` scores many (video, question, answer) requests: each video is
encoded through `VideoChat.encode` (its cache keeps the last few, so the options of one question
share one encoding), each answer scored by `stanchat.engine.likelihood` on the chat's LLM,
`batch_size` answers per forward pass. `choose(scores)` is the option a multiple-choice question
gets: the likeliest by summed log-probability (the first of equals). `stanchat eval mcq` and the
lmms-eval plugin (`stanchat.lmms`) both score through here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from stanchat.errors import StanchatError
from stanchat.options import DEFAULTS, VIDEO_OPTIONS, VideoOptions

if TYPE_CHECKING:
    from stanchat.chat import VideoChat
    from stanchat.engine.likelihood import Scored

FIELDS = ("video", "question", "answer") + VIDEO_OPTIONS


def score_answers(chat: "VideoChat", requests: Iterable[dict], batch_size: int = DEFAULTS.batch_size,
                  defaults: dict[str, Any] | None = None) -> list["Scored"]:
    """The `Scored` of each request (dict: video, question, answer, and any `VideoOptions` field;
    `defaults` fills the options a request leaves out), in order. Requests are encoded and scored
    `batch_size` at a time, so only one batch's video tokens are held at once."""
    from stanchat.engine.likelihood import score

    if batch_size < 1:
        raise StanchatError(f"the batch size must be at least 1, got {batch_size}", param="batch_size")
    scored: list["Scored"] = []
    batch: list = []
    for number, request in enumerate(requests, 1):
        batch.append(_job(chat, request, defaults or {}, number))
        if len(batch) == batch_size:
            scored += score(chat.llava, batch, batch_size)
            batch = []
    return scored + (score(chat.llava, batch, batch_size) if batch else [])


def _job(chat: "VideoChat", request: dict, defaults: dict[str, Any], number: int):
    """The score job of one request (its video encoded through the chat's cache)."""
    from stanchat.engine.likelihood import make_score_job

    unknown = sorted(set(request) - set(FIELDS))
    if unknown:
        raise StanchatError(f"answer {number}: unknown field(s) {', '.join(unknown)}; it takes {', '.join(FIELDS)}")
    options = VideoOptions(**{**defaults, **{k: v for k, v in request.items() if k in VIDEO_OPTIONS}})
    chat.check_prompt(options, request["question"])  # before decoding
    encoded = chat.encode(request["video"], options, question=request["question"])
    return make_score_job(chat.processor, chat.context_length, encoded.features, encoded.frames, options.temporal,
                          request["question"], request["answer"], spans=encoded.spans)


def choose(scores: list["Scored"]) -> int:
    """The index of the likeliest answer (the first of equal ones)."""
    if not scores:
        raise StanchatError("a multiple-choice question needs at least one option")
    best = max(score.logprob for score in scores)
    return next(i for i, score in enumerate(scores) if score.logprob == best)
