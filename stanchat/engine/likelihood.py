"""The log-likelihood of an answer given the video and the question: multiple choice by likelihood.

The prompt is generation's (`prompt.plan`: the chat template, a video placeholder per block, each
after its time span under temporal segments, the context check) and the video enters the LLM the
way it does for generation (`hf.embed_prompts`, which uses
`graft.place_video`). The answer's tokens are those the chat template writes after its generation
prompt when the answer is the assistant's turn (LLaVA-1.5: "... ASSISTANT:" then " left"), up to the
answer's end (the end-of-turn marker is not scored). Rows of prompt + answer run right-padded
through one forward pass per batch; a row's score is the sum over its answer tokens of
log p(token | everything before it), and `greedy` says whether every answer token is the most likely
one there (greedy decoding would begin with the answer): lmms-eval's (logprob, is_greedy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from stanchat.engine.hf import embed_prompts
from stanchat.engine.prompt import conversation, encode, plan, prompt_text
from stanchat.errors import StanchatError
from stanchat.options import DEFAULTS


@dataclass
class ScoreJob:
    """One answer to score: the prompt (a video placeholder per block), the answer's tokens, the video."""

    prompt_ids: list[int]
    answer_ids: list[int]
    features: torch.Tensor  # (1, N, E) the projected video tokens that replace the placeholders
    blocks: tuple[int, ...]  # video tokens per placeholder, in order (one block but under segments)


@dataclass(frozen=True)
class Scored:
    logprob: float  # sum of the answer tokens' log-probabilities (<= 0; higher is likelier)
    greedy: bool  # every answer token is the argmax at its position
    tokens: int  # answer tokens scored


def answer_ids(processor: Any, history: list[tuple[str, str]], question: str, answer: str,
               system: str | None = None) -> list[int]:
    """The tokens the chat template writes for `answer` (stripped) after its generation prompt (the
    same whatever precedes the video placeholders). Raises when the answer is empty or the template
    does not continue its generation prompt with the assistant's answer."""
    answer = answer.strip()
    if not answer:
        raise StanchatError("an answer to score is empty", param="answer")
    if processor.image_token in answer:
        raise StanchatError(f"an answer contains the model's {processor.image_token!r} token; remove it", param="answer")
    prompt = prompt_text(processor, history, question, system)
    turns = conversation([*history, (question, answer)], "", system)[:-1]  # ends with the assistant's answer
    full = processor.apply_chat_template(turns)
    at = full.find(answer, len(prompt)) if full.startswith(prompt) else -1
    if at < 0:
        raise StanchatError("the model's chat template does not write an answer after its generation prompt; "
                            "likelihood scoring needs one that does", param="answer")
    ids, prompt_ids = encode(processor, full[:at + len(answer)]), encode(processor, prompt)
    if ids[:len(prompt_ids)] == prompt_ids and len(ids) > len(prompt_ids):
        return ids[len(prompt_ids):]
    # the answer's first characters merged with the prompt's last token: tokenize the answer's part alone
    return processor.tokenizer(full[len(prompt):at + len(answer)], add_special_tokens=False)["input_ids"]


def make_score_job(processor: Any, context_length: int, features: torch.Tensor, frames: int, temporal: str,
                   question: str, answer: str, history: list[tuple[str, str]] = (),
                   system: str | None = None, spans: list[tuple[float, float]] | None = None) -> ScoreJob:
    """The job scoring `answer` to `question` (after `history`) about a video encoded as `features`
    (1, N, E) from `frames` frames in mode `temporal` (under `segments`: S equal blocks, after their
    `spans`); refused when prompt and answer overflow the context."""
    history = list(history)
    ids, prompt_tokens = plan(processor, context_length, int(features.shape[1]), frames, temporal, history,
                              question, system, spans)
    answer_tokens = answer_ids(processor, history, question, answer, system)
    if prompt_tokens + len(answer_tokens) > context_length:
        raise StanchatError(f"the prompt ({prompt_tokens} tokens) and the answer ({len(answer_tokens)}) need more than "
                            f"the LLM's {context_length}-token context; use fewer frames or a shorter answer",
                            param="answer")
    blocks = (int(features.shape[1]) // len(spans),) * len(spans) if spans else (int(features.shape[1]),)
    return ScoreJob(prompt_ids=ids, answer_ids=answer_tokens, features=features, blocks=blocks)


def score(llava: Any, jobs: list[ScoreJob], batch_size: int = DEFAULTS.batch_size) -> list[Scored]:
    """The score of each job, in order, `batch_size` rows per forward pass."""
    if batch_size < 1:
        raise StanchatError(f"the batch size must be at least 1, got {batch_size}", param="batch_size")
    scored: list[Scored] = []
    for start in range(0, len(jobs), batch_size):
        scored += _score_batch(llava, jobs[start:start + batch_size])
    return scored


def _score_batch(llava: Any, jobs: list[ScoreJob]) -> list[Scored]:
    rows = [(job.prompt_ids + job.answer_ids, job.features, job.blocks) for job in jobs]
    embeds, mask = embed_prompts(llava, rows, pad_left=False)
    with torch.inference_mode():
        logits = llava(inputs_embeds=embeds, attention_mask=mask).logits  # (B, S, V)
    scored = []
    for i, job in enumerate(jobs):
        end, count = int(mask[i].sum()), len(job.answer_ids)  # the row's length as the LLM read it
        predicted = logits[i, end - count - 1:end - 1].float()  # (count, V): position t predicts token t + 1
        answer = torch.tensor(job.answer_ids, device=predicted.device)
        logprobs = predicted.log_softmax(-1).gather(1, answer[:, None])  # (count, 1)
        scored.append(Scored(logprob=float(logprobs.sum()), greedy=bool((predicted.argmax(-1) == answer).all()),
                             tokens=count))
    return scored
