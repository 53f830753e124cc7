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
    assert [r["id"] for r in records] == ["a", "request 2", "c", "bad"]
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
    assert {r["id"]: r.get("answer") for r in first} == {"left": "a blue triangle moves left", "line 2": None}
    assert "not JSON" in next(r for r in first if r["id"] == "line 2")["error"]
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


def _counting_decode(monkeypatch, chat, fail: dict | None = None) -> list:
    """chat's encoding (decode + tower), recording each (video, frames) it encodes; `fail` maps a
    video to what it raises."""
    calls, encode = [], chat._encode

    def counted(video, options, max_seconds=None):
        calls.append((str(video), options.frames))
        if fail and str(video) in fail:
            raise fail[str(video)]
        return encode(video, options, max_seconds)

    monkeypatch.setattr(chat, "_encode", counted)
    chat.cache.clear()  # the module's chat may hold these videos from earlier tests
    return calls


def test_the_feature_cache_keeps_only_the_last_few_videos(chat, monkeypatch):
    calls = _counting_decode(monkeypatch, chat)
    frames = list(range(2, 3 + chat.cache.capacity))  # one more distinct (video, frames) than the cache holds
    requests = [{"video": str(LEFT), "question": QUESTION, "frames": f, "max_new_tokens": 2}
                for f in [*frames, frames[-1], frames[0]]]
    records = list(chat.ask_many(requests, batch_size=4))
    assert all("answer" in r for r in records)
    # the repeated last one is a hit; the first was dropped to keep chat.cache.capacity, so it is decoded again
    assert [f for _, f in calls] == [*frames, frames[0]]


def _asked(video=LEFT, **fields) -> dict:
    return {"video": str(video), "question": QUESTION, "max_new_tokens": 2, **fields}


def test_ids_are_unique_and_generated_ones_cannot_clash(chat, tmp_path):
    records = list(chat.ask_many([_asked(id=2), _asked(), _asked(SHRINK, id=2)]))
    assert [r["id"] for r in records] == [2, "request 2", "request 3"]
    assert "answer" in records[1] and "id 2 is taken" in records[2]["error"]
    requests, out = tmp_path / "requests.jsonl", tmp_path / "answers.jsonl"
    lines = [_asked(id=2), _asked(), _asked(SHRINK, id=2), {"id": {"a": 1}, "video": str(LEFT)},
             _asked(id="line 2")]
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["ask", "--model", "tiny", "--device", "cpu", "--batch", str(requests), "--out", str(out)]) == 0
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(records, key=str) == [2, "line 2", "line 3", "line 4", "line 5"]
    assert "answer" in records[2] and "answer" in records["line 2"]
    assert "id 2 is taken" in records["line 3"]["error"] and "string or an integer" in records["line 4"]["error"]
    assert 'the form "line N"' in records["line 5"]["error"]


@pytest.mark.parametrize("order", ["explicit first", "generated first"])
def test_the_generated_id_form_is_reserved_in_either_order(chat, order):
    asked = [_asked(id="request 2"), _asked()] if order == "explicit first" else [_asked(), _asked(id="request 1")]
    records = list(chat.ask_many(asked))
    assert [r["id"] for r in records] == ["request 1", "request 2"]  # one record each, under its own place
    refused, answered = records if order == "explicit first" else records[::-1]
    assert 'has the form "request N" given to requests without an id' in refused["error"]
    assert "answer" in answered and "error" not in answered


def test_a_line_cannot_take_a_later_lines_generated_id_nor_block_its_rerun(chat, tmp_path):
    requests, out = tmp_path / "requests.jsonl", tmp_path / "answers.jsonl"
    argv = ["ask", "--model", "tiny", "--device", "cpu", "--batch", str(requests), "--out", str(out)]
    requests.write_text(json.dumps(_asked(id="line 2")) + "\n" + json.dumps(_asked(SHRINK)) + "\n")
    assert main(argv) == 0
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in first] == ["line 1", "line 2"]
    assert 'line 1: the id "line 2" has the form "line N"' in first[0]["error"]
    assert first[1]["answer"] == chat.ask(SHRINK, QUESTION, max_new_tokens=2).text  # line 2's own answer
    requests.write_text(json.dumps(_asked(id="first")) + "\n" + json.dumps(_asked(SHRINK)) + "\n")
    assert main(argv) == 0  # the fixed line 1 is answered; line 2, answered already, is not asked again
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["line 1", "line 2", "first"]


def test_a_decoder_crash_is_that_requests_error_and_ctrl_c_still_stops(chat, monkeypatch):
    _counting_decode(monkeypatch, chat, fail={str(SHRINK): RuntimeError("decoder exploded")})
    requests = [{"id": i, "video": str(video), "question": QUESTION, "max_new_tokens": 2}
                for i, video in enumerate((LEFT, SHRINK, LEFT))]
    records = list(chat.ask_many(requests))
    assert [("answer" in r, r.get("error")) for r in records] == [
        (True, None), (False, "RuntimeError: decoder exploded"), (True, None)]
    _counting_decode(monkeypatch, chat, fail={str(LEFT): KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        list(chat.ask_many(requests))


def test_a_failed_batch_is_its_requests_error_and_the_run_goes_on(chat, monkeypatch):
    from stanchat.engine.hf import TransformersEngine

    generate_many, batches = TransformersEngine.generate_many, []

    def first_fails(engine, jobs):
        batches.append(len(jobs))
        if len(batches) == 1:
            raise RuntimeError("CUDA out of memory")
        return generate_many(engine, jobs)

    def interrupted(engine, jobs):
        raise KeyboardInterrupt

    monkeypatch.setattr(TransformersEngine, "generate_many", first_fails)
    requests = [{"id": i, "video": str(video), "question": QUESTION, "max_new_tokens": 2}
                for i, video in enumerate((LEFT, "/no/such.mp4", SHRINK, LEFT, SHRINK))]
    records = list(chat.ask_many(requests, batch_size=3))
    assert batches == [2, 2]  # the missing video never reached a batch
    assert [r["id"] for r in records] == [0, 1, 2, 3, 4]
    assert [records[i]["error"] for i in (0, 2)] == ["RuntimeError: CUDA out of memory"] * 2
    assert "such.mp4" in records[1]["error"]  # its own error, not the batch's
    assert all("answer" in r and "error" not in r for r in records[3:])
    monkeypatch.setattr(TransformersEngine, "generate_many", interrupted)  # Ctrl-C still stops the run
    with pytest.raises(KeyboardInterrupt):
        list(chat.ask_many(requests))


def test_answers_are_written_as_batches_finish_so_an_interrupted_run_resumes(chat, monkeypatch, tmp_path):
    from stanchat.batch import answer_file

    requests, out = tmp_path / "requests.jsonl", tmp_path / "answers.jsonl"
    requests.write_text("".join(json.dumps({"id": name, "video": str(video), "question": QUESTION}) + "\n"
                                for name, video in (("left", LEFT), ("shrink", SHRINK))))
    _counting_decode(monkeypatch, chat, fail={str(SHRINK): KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        answer_file(chat, str(requests), str(out), batch_size=1)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["left"]  # on disk before Ctrl-C
    monkeypatch.undo()
    assert answer_file(chat, str(requests), str(out), batch_size=1) == (1, 0)  # only the one left
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["left", "shrink"]
