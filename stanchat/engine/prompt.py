"""A question and its history -> a `Job`: the one place a prompt is built and checked.

The prompt is the LLaVA processor's own chat template with the video as the single `<image>` of the
first user turn; its token ids hold ONE placeholder, which the engine expands to the video's N
tokens. `job` counts the prompt as the LLM will read it (`len(ids) - 1 + N`), refuses one longer
than the context (naming a frame count that fits for `concat`), and caps the answer at the room left.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from stanchat.engine.base import Job, Sampling
from stanchat.errors import StanchatError
from stanchat.options import check_question

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


def prompt_text(processor: Any, history: list[tuple[str, str]], question: str, system: str | None = None) -> str:
    """The chat-template prompt, with exactly one video placeholder."""
    try:
        text = processor.apply_chat_template(conversation(history, question, system), add_generation_prompt=True)
    except Exception as err:  # a template that takes no system turn raises its own error
        raise StanchatError(f"the model's chat template refused the conversation: {err}", param="messages") from err
    if text.count(processor.image_token) != 1:
        raise StanchatError(f"a question contains the model's {processor.image_token!r} token; remove it",
                            param="question")
    return text


def prompt_ids(processor: Any, history: list[tuple[str, str]], question: str, system: str | None = None) -> list[int]:
    """Token ids of the prompt, with exactly one video placeholder (no second BOS when the template writes one)."""
    return encode(processor, prompt_text(processor, history, question, system))


def encode(processor: Any, text: str) -> list[int]:
    """Token ids of chat-template text: the tokenizer's BOS added unless the template wrote one."""
    tokenizer = processor.tokenizer
    add_special = not (tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token))
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]


def check_context(prompt_tokens: int, limit: int, video_tokens: int, temporal: str, frames: int) -> None:
    """Refuse a prompt that leaves no room for an answer in the LLM's `limit`-token context, naming a
    frame count that would fit for `concat`."""
    if prompt_tokens < limit:  # at least one token of answer fits
        return
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
         history: list[tuple[str, str]], question: str, system: str | None = None) -> tuple[list[int], int]:
    """The prompt's ids (one video placeholder) and its length as the LLM reads it, refused when it
    does not fit the context. Needs only the video's token count, so it runs before decoding too."""
    ids = prompt_ids(processor, history, check_question(question), system)
    prompt_tokens = len(ids) - 1 + video_tokens  # the placeholder becomes N video tokens
    check_context(prompt_tokens, context_length, video_tokens, temporal, frames)
    return ids, prompt_tokens


def make_job(processor: Any, context_length: int, features: "torch.Tensor", frames: int, temporal: str,
             history: list[tuple[str, str]], question: str, sampling: Sampling,
             system: str | None = None) -> tuple[Job, int]:
    """The job answering `question` after `history` about a video encoded as `features` (1, N, E)
    from `frames` frames in mode `temporal`, and the prompt's length in tokens as the LLM reads it.
    The answer is capped at the context's room."""
    ids, prompt_tokens = plan(processor, context_length, int(features.shape[1]), frames, temporal, history,
                              question, system)
    room = context_length - prompt_tokens
    if sampling.max_tokens > room:
        sampling = replace(sampling, max_tokens=room)
    return Job(prompt_ids=ids, features=features, sampling=sampling), prompt_tokens
