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
    `defaults` fills the options a request leaves out), in order."""
    from stanchat.engine.likelihood import make_score_job, score

    jobs = []
    for number, request in enumerate(requests, 1):
        unknown = sorted(set(request) - set(FIELDS))
        if unknown:
            raise StanchatError(f"answer {number}: unknown field(s) {', '.join(unknown)}; it takes {', '.join(FIELDS)}")
        given = {**(defaults or {}), **{k: v for k, v in request.items() if k in VIDEO_OPTIONS}}
        options = VideoOptions(**given)
        chat.check_prompt(options, request["question"])  # before decoding
        encoded = chat.encode(request["video"], options)
        jobs.append(make_score_job(chat.processor, chat.context_length, encoded.features, encoded.frames,
                                   options.temporal, request["question"], request["answer"]))
    return score(chat.llava, jobs, batch_size)


def choose(scores: list["Scored"]) -> int:
    """The index of the likeliest answer (the first of equal ones)."""
    if not scores:
        raise StanchatError("a multiple-choice question needs at least one option")
    best = max(score.logprob for score in scores)
    return next(i for i, score in enumerate(scores) if score.logprob == best)
