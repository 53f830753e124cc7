"""Batch answers: `VideoChat.ask_many` and `stanchat ask --batch` (written as they finish, resumable)."""

import json

import pytest

from stanchat.cli import main
from tests.api_helpers import LEFT, QUESTION, SHRINK


@pytest.fixture(scope="module")
def chat():
    from stanchat.chat import load

    return load("tiny", device="cpu")


def test_ask_many_equals_ask(chat):
    requests = [{"id": "a", "video": str(LEFT), "question": QUESTION},
                {"video": str(SHRINK), "question": QUESTION},
                {"id": "c", "video": str(LEFT), "question": "Which way does it move?"},
                {"id": "bad", "video": "/no/such.mp4", "question": QUESTION}]
    records = list(chat.ask_many(requests, batch_size=2))
    assert [r["id"] for r in records] == ["a", 1, "c", "bad"]
    for request, record in zip(requests[:3], records):
        assert record["answer"] == chat.ask(request["video"], request["question"]).text
    assert "error" in records[3] and "answer" not in records[3]


def test_cli_batch_writes_lines_and_a_rerun_skips_them(tmp_path, capsys):
    requests, out = tmp_path / "requests.jsonl", tmp_path / "answers.jsonl"
    lines = [json.dumps({"id": "left", "video": str(LEFT), "question": QUESTION}), "{not json",
             json.dumps({"id": "shrink", "video": str(SHRINK), "question": QUESTION})]
    requests.write_text("\n".join(lines[:1] + lines[1:2]) + "\n")
    assert main(["ask", "--model", "tiny", "--device", "cpu", "--batch", str(requests), "--out", str(out)]) == 0
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["id"]: r.get("answer") for r in first} == {"left": "a blue triangle moves left", 1: None}
    assert "not JSON" in next(r for r in first if r["id"] == 1)["error"]
    requests.write_text("\n".join(lines) + "\n")  # one more request: only it (and the bad line) run again
    assert main(["ask", "--model", "tiny", "--device", "cpu", "--batch", str(requests), "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records if "answer" in r] == ["left", "shrink"]
    assert records[-1]["answer"] == "a blue triangle shrinks"
    assert "2 errors" not in capsys.readouterr().out.splitlines()[-1]


def test_cli_batch_needs_out(tmp_path, capsys):
    (tmp_path / "r.jsonl").write_text("{}\n")
    assert main(["ask", "--batch", str(tmp_path / "r.jsonl")]) == 2
    assert "--out" in capsys.readouterr().err
