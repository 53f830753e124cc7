"""The prompt of a conversation as token ids, the video as ONE placeholder (engines expand it).

The same chat template and tokenization as `stanchat.session.Session` (the processor's template,
the video's `<image>` in the first user turn, no second BOS when the template writes one), so the
server's answers are the library's answers.
"""

from __future__ import annotations

from typing import Any

from stanchat.api.errors import ApiError


def conversation(history: list[tuple[str, str]], question: str, system: str | None) -> list[dict]:
    """The chat-template conversation: optional system turn, earlier turns, the new question."""
    turns: list[dict] = [] if system is None else [{"role": "system", "content": [{"type": "text", "text": system}]}]
    for i, (q, a) in enumerate([*history, (question, None)]):
        content = ([{"type": "image"}] if i == 0 else []) + [{"type": "text", "text": q}]
        turns.append({"role": "user", "content": content})
        if a is not None:
            turns.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
    return turns


def prompt_text(processor: Any, history: list[tuple[str, str]], question: str, system: str | None = None) -> str:
    try:
        text = processor.apply_chat_template(conversation(history, question, system), add_generation_prompt=True)
    except Exception as err:  # a template that takes no system turn raises its own error
        raise ApiError(400, f"the model's chat template refused the conversation: {err}", param="messages") from err
    if text.count(processor.image_token) != 1:
        raise ApiError(400, f"a message contains the model's {processor.image_token!r} token; remove it",
                       param="messages")
    return text


def prompt_ids(processor: Any, history: list[tuple[str, str]], question: str, system: str | None = None) -> list[int]:
    """Token ids of the prompt, with exactly one video placeholder."""
    text = prompt_text(processor, history, question, system)
    tokenizer = processor.tokenizer
    add_special = not (tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token))
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]
