"""One answer path: every front end gives the library's greedy answers, honouring the same options.

For each case of `tests.one_path.CASES` (real clips and a bundled example; frames, temporal mode,
answer length and temperature given as flags or per request), the CLI's `ask`, a `Session`,
`ask_many`, `ask --batch`, the API (transformers engine) and the app's handler must answer as
`VideoChat.ask` does, from as many frames and video tokens. The vLLM engine is held to the same cases
in tests/api/test_api_vllm.py. Every front end reaches the one engine, so a difference here is a second path.
"""

from __future__ import annotations

import json

import pytest

from tests.one_path import CASES, api_answers


@pytest.fixture(scope="module")
def chat():
    from stanchat.chat import load

    return load("tiny", device="cpu")


@pytest.fixture(scope="module")
def reference(chat) -> list[tuple[str, int, int]]:
    """(answer, frames, video tokens) of each case from `VideoChat.ask`."""
    answers = [chat.ask(case.video, case.question, **case.options) for case in CASES]
    assert answers[-1].finish_reason == "length"  # the answer length is honoured (cut short)
    assert len({a.text for a in answers}) > 1  # the cases really differ
    return [(a.text, a.frames, a.video_tokens) for a in answers]


def _cli_ask(chat, capsys, tmp_path):
    from stanchat.cli import main

    answers = []
    for case in CASES:
        assert main(["ask", case.video, case.question, "--model", "tiny", "--device", "cpu", *case.flags, "--json"]) == 0
        record = json.loads(capsys.readouterr().out)
        answers.append((record["answer"], record["frames"], record["video_tokens"]))
    return answers


def _session(chat, capsys, tmp_path):
    answers = []
    for case in CASES:
        session = chat.session(case.video, case.frames, case.temporal)
        answer = session.ask(case.question, max_new_tokens=case.max_new_tokens, temperature=case.temperature)
        answers.append((answer.text, answer.frames, answer.video_tokens))
    return answers


def _ask_many(chat, capsys, tmp_path):
    requests = [{"video": case.video, "question": case.question, **case.options} for case in CASES]
    records = list(chat.ask_many(requests, batch_size=3))  # a batch of three, then two
    return [(r["answer"], r["frames"], r["video_tokens"]) for r in records]


def _ask_batch_flags(chat, capsys, tmp_path):
    """`ask --batch` with the options as the command's flags (the lines name only video and question)."""
    from stanchat.cli import main

    answers = []
    for n, case in enumerate(CASES):
        requests, out = tmp_path / f"requests-{n}.jsonl", tmp_path / f"answers-{n}.jsonl"
        requests.write_text(json.dumps({"video": case.video, "question": case.question}) + "\n")
        argv = ["ask", "--batch", str(requests), "--out", str(out), "--model", "tiny", "--device", "cpu", *case.flags]
        assert main(argv) == 0
        capsys.readouterr()
        record = json.loads(out.read_text())
        answers.append((record["answer"], record["frames"], record["video_tokens"]))
    return answers


def _api(chat, capsys, tmp_path):
    from stanchat.api.config import ApiConfig
    from stanchat.api.server import build
    from tests.api_helpers import serve_in_thread

    with serve_in_thread(build(chat, ApiConfig())) as base:
        return api_answers(base)


def _app(chat, capsys, tmp_path):
    from stanchat.app.config import AppConfig
    from stanchat.app.conversation import Conversation

    answers = []
    for case in CASES:
        conversation = Conversation(chat, AppConfig(), root=str(tmp_path))
        conversation.open(case.video, case.frames, case.temporal)
        for _ in conversation.ask(case.question, **conversation.generation(case.max_new_tokens, case.temperature)):
            pass
        answer = conversation.answer
        answers.append((answer.text, answer.frames, answer.video_tokens))
    return answers


FRONT_ENDS = {"ask": _cli_ask, "session": _session, "ask_many": _ask_many, "ask --batch": _ask_batch_flags,
              "api": _api, "app": _app}


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_every_front_end_gives_the_librarys_answers(front_end, chat, reference, capsys, tmp_path):
    assert FRONT_ENDS[front_end](chat, capsys, tmp_path) == reference


def test_every_front_end_reaches_the_one_engine(chat, monkeypatch, capsys, tmp_path):
    """The jobs each in-process front end hands the engine are the same jobs (prompt ids, sampling):
    no front end builds its own prompt or answers past the engine."""
    from stanchat.engine.hf import TransformersEngine

    seen: dict[str, list] = {}
    run = TransformersEngine._run

    def spy(engine, items):
        seen.setdefault(current, []).extend((tuple(job.prompt_ids), job.sampling) for job, _ in items)
        return run(engine, items)

    monkeypatch.setattr(TransformersEngine, "_run", spy)
    for current in ("session", "ask_many", "app"):
        FRONT_ENDS[current](chat, capsys, tmp_path)
    assert len(seen["session"]) == len(CASES) and seen["ask_many"] == seen["session"] == seen["app"]
