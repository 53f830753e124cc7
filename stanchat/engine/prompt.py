"""A question and its history -> a `Job`: the one place a prompt is built and checked.

The prompt is the LLaVA processor's own chat template with the video as the `<image>` of the first
user turn; its token ids hold one placeholder per video block, which the engine expands to that
block's tokens. One block for every mode but `segments`, whose S blocks each follow their time span
("0.0-2.0 s: <image>", `stanchat.segments.layout`). `make_job` counts the prompt as the LLM will
read it (`len(ids) - blocks + N`), refuses one longer than the context (naming a frame count that
fits for `concat`, the largest S for `segments`), and caps the answer at the room left.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from stanchat.engine.base import Job, Sampling
from stanchat.errors import StanchatError
from stanchat.options import check_question
from stanchat.segments import layout

if TYPE_CHECKING:
    import torch


def conversation(history: list[tuple[str, str]], question: str, system: str | None = None) -> list[dict]:
    """The chat-template conversation: optional system turn, earlier turns, the new question; the
    video is the first user turn's image."""
    turns: list[dict] = [] if system is None else [{"role": "system", "content": [{"type": "text", "text": system}]}]
    for i, (q, a) in enumerate([*history, (question, None)]):
        content = ([{"type": "image"}] if i == 0 else []) + [{"type": "text", "text": q}]
        turns.append({"role": "user", "content": content})
        if a is not None:
            turns.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
    return turns


def prompt_text(processor: Any, history: list[tuple[str, str]], question: str, system: str | None = None,
                spans: list[tuple[float, float]] | None = None) -> str:
    """The chat-template prompt, with exactly one video placeholder, or (`spans` of S windows) S
    placeholders each after its time span."""
    try:
        text = processor.apply_chat_template(conversation(history, question, system), add_generation_prompt=True)
    except Exception as err:  # a template that takes no system turn raises its own error
        raise StanchatError(f"the model's chat template refused the conversation: {err}", param="messages") from err
    if text.count(processor.image_token) != 1:
        raise StanchatError(f"a question contains the model's {processor.image_token!r} token; remove it",
                            param="question")
    return text if spans is None else text.replace(processor.image_token, layout(spans, processor.image_token))


def prompt_ids(processor: Any, history: list[tuple[str, str]], question: str, system: str | None = None,
               spans: list[tuple[float, float]] | None = None) -> list[int]:
    """Token ids of the prompt, with its video placeholders (no second BOS when the template writes one)."""
    return encode(processor, prompt_text(processor, history, question, system, spans))


def encode(processor: Any, text: str) -> list[int]:
    """Token ids of chat-template text: the tokenizer's BOS added unless the template wrote one."""
    tokenizer = processor.tokenizer
    add_special = not (tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token))
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]


def check_context(prompt_tokens: int, limit: int, video_tokens: int, temporal: str, frames: int,
                  segments: int = 1, fit_segments: int = 0) -> None:
    """Refuse a prompt that leaves no room for an answer in the LLM's `limit`-token context, naming a
    frame count that would fit for `concat`, and for `segments` the largest S that fits (`fit_segments`,
    counted by `plan`; 0 when none does)."""
    if prompt_tokens < limit:  # at least one token of answer fits
        return
    if temporal == "segments":
        def fewer_segments(w) -> str:
            fewer = f"{w.set('segments', fit_segments)} or fewer, or {w.also('temporal', 'stan')}" \
                if fit_segments >= 1 else w.set("temporal", "stan")
            return (f"{w.name('temporal')} segments with {segments} segments needs {prompt_tokens} tokens "
                    f"({video_tokens} for the video and each segment's time span) and the answer more, past the "
                    f"LLM's {limit}-token context; {fewer} ({video_tokens // segments} video tokens)")
        raise StanchatError(fewer_segments, param="segments")
    if temporal == "concat":
        per_frame = video_tokens // frames
        fit = (limit - 1 - (prompt_tokens - video_tokens)) // per_frame

        def concat(w) -> str:
            fewer = f"{w.set('frames', fit)} or fewer, or {w.also('temporal', 'stan')}" if fit >= 1 else \
                w.set("temporal", "stan")
            return (f"{w.name('temporal')} concat with {frames} frames needs {prompt_tokens} tokens ({video_tokens} "
                    f"for the video) and the answer more, past the LLM's {limit}-token context; {fewer} "
                    f"({per_frame} video tokens for any number of frames)")
        raise StanchatError(concat, param="frames")
    raise StanchatError(lambda w: f"the prompt needs {prompt_tokens} tokens and the answer more, past the LLM's "
                                  f"{limit}-token context; {w.advice['reset']} or ask a shorter question",
                        param="messages")


def plan(processor: Any, context_length: int, video_tokens: int, frames: int, temporal: str,
         history: list[tuple[str, str]], question: str, system: str | None = None,
         spans: list[tuple[float, float]] | None = None) -> tuple[list[int], int]:
    """The prompt's ids (a video placeholder per block: one, or one per span) and its length as the
    LLM reads it, refused when it does not fit the context. Needs only the video's token count (and
    for segments its spans, or any of the same count), so it runs before decoding too."""
    ids = prompt_ids(processor, history, check_question(question), system, spans)
    blocks = 1 if spans is None else len(spans)
    prompt_tokens = len(ids) - blocks + video_tokens  # each placeholder becomes its block's video tokens
    fit = 0
    if spans is not None and prompt_tokens >= context_length:  # the largest S that fits, counted as S is
        per_block = video_tokens // blocks
        fit = next((s for s in range(blocks - 1, 0, -1) if len(prompt_ids(
            processor, history, question.strip(), system, spans[:s])) - s + s * per_block < context_length), 0)
    check_context(prompt_tokens, context_length, video_tokens, temporal, frames, blocks, fit)
    return ids, prompt_tokens


def make_job(processor: Any, context_length: int, features: "torch.Tensor", frames: int, temporal: str,
             history: list[tuple[str, str]], question: str, sampling: Sampling,
             system: str | None = None, spans: list[tuple[float, float]] | None = None) -> tuple[Job, int]:
    """The job answering `question` after `history` about a video encoded as `features` (1, N, E)
    from `frames` frames in mode `temporal` (under `segments`: S equal blocks, after their `spans`),
    and the prompt's length in tokens as the LLM reads it. The answer is capped at the context's room."""
    ids, prompt_tokens = plan(processor, context_length, int(features.shape[1]), frames, temporal, history,
                              question, system, spans)
    room = context_length - prompt_tokens
    if sampling.max_tokens > room:
        sampling = replace(sampling, max_tokens=room)
    blocks = () if spans is None else (int(features.shape[1]) // len(spans),) * len(spans)
    return Job(prompt_ids=ids, features=features, sampling=sampling, blocks=blocks), prompt_tokens
