"""`stanchat eval videoqa` on synthetic QA sets with a tiny LLaVA + STAN: predictions appended as
they come, resumption, string scores, and judges (a stub OpenAI-compatible server, a tiny local LM)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import stanchat
from stanchat.cli import main
from stanchat.eval.videoqa import contains, exact_match, read_jsonl
from tests.evalkit import error_line, eval_world  # noqa: F401  (fixture)
from tests.tiny_llava import tiny_models  # noqa: F401  (fixture)


def run_qa(world, models, fmt, out, *extra):
    data = world[fmt]
    argv = ["eval", "videoqa", "--dataset", data.format, "--data-root", str(data.root), "--llava", models["default"],
            "--stan", models["stan"], "--frames", "2", "--max-new-tokens", "2", "--out", str(out), *extra]
    assert main(argv) == 0
    for suffix in ("json", "md", "png"):
        assert (out / f"videoqa.{suffix}").stat().st_size > 0
    return json.loads((out / "videoqa.json").read_text())


def predictions(out):
    return [json.loads(line) for line in (out / "videoqa_predictions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("fmt", ["msvd-qa", "msrvtt-qa", "activitynet-qa", "jsonl-qa", "csv-qa"])
def test_videoqa_every_format(eval_world, tiny_models, tmp_path, fmt):
    results = run_qa(eval_world, tiny_models, fmt, tmp_path)
    rows = predictions(tmp_path)
    assert len(rows) == results["metrics"]["answered"] == results["dataset"]["counts"]["answered"]
    assert len({row["id"] for row in rows}) == len(rows)  # every question once
    assert results["dataset"]["counts"]["videos_missing"] == 1
    expected = 100 * sum(exact_match(r["prediction"], r["answer"]) for r in rows) / len(rows)
    assert results["metrics"]["exact_match"] == pytest.approx(expected)
    assert results["judge"] is None and "judge_accuracy" not in results["metrics"]  # no hidden judge
    assert results["model"]["stan_fingerprint"] and results["prompt"].startswith("{question}")


def test_videoqa_resumes_without_asking_again(eval_world, tiny_models, tmp_path, monkeypatch):
    first = run_qa(eval_world, tiny_models, "msvd-qa", tmp_path)
    rows = predictions(tmp_path)
    # keep the first answer and half a line, as a kill mid-write would leave
    (tmp_path / "videoqa_predictions.jsonl").write_text(json.dumps(rows[0]) + "\n" + '{"id": "x", "pred')
    loads = []
    real_load = stanchat.load
    monkeypatch.setattr(stanchat, "load", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    second = run_qa(eval_world, tiny_models, "msvd-qa", tmp_path)
    assert loads == [1] and second["metrics"] == first["metrics"]  # greedy answers: the same numbers
    kept = read_jsonl([tmp_path / "videoqa_predictions.jsonl"])  # skips the half line
    assert set(kept) == {r["id"] for r in rows} and kept[rows[0]["id"]] == rows[0]
    run_qa(eval_world, tiny_models, "msvd-qa", tmp_path)  # all answered: the model is not even loaded
    assert loads == [1]


def test_videoqa_refuses_to_mix_settings(eval_world, tiny_models, tmp_path, capsys):
    run_qa(eval_world, tiny_models, "msvd-qa", tmp_path)
    data = eval_world["msvd-qa"]
    argv = ["eval", "videoqa", "--dataset", "msvd-qa", "--data-root", str(data.root), "--llava", tiny_models["default"],
            "--stan", tiny_models["stan"], "--frames", "3", "--max-new-tokens", "2", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "frames differ" in error_line(capsys.readouterr().err)


class _StubJudge(BaseHTTPRequestHandler):
    """Says yes exactly when the question asks about a colour; counts the requests it gets."""

    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        verdict = "Yes." if "colour" in body["messages"][-1]["content"] else "no"
        reply = {"model": "stub-judge-1", "system_fingerprint": "fp-7", "choices": [{"message": {"content": verdict}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_judge():
    server = HTTPServer(("127.0.0.1", 0), _StubJudge)
    _StubJudge.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join()


def test_videoqa_http_judge(eval_world, tiny_models, tmp_path, stub_judge):
    results = run_qa(eval_world, tiny_models, "jsonl-qa", tmp_path, "--judge-url", stub_judge, "--judge-name", "stub")
    rows = predictions(tmp_path)
    expected = 100 * sum("colour" in r["question"] for r in rows) / len(rows)
    assert results["metrics"]["judge_accuracy"] == pytest.approx(expected)
    judge = results["judge"]
    assert (judge["kind"], judge["name"], judge["version"]) == ("http", "stub", {"model": "stub-judge-1",
                                                                                  "system_fingerprint": "fp-7"})
    sent = _StubJudge.requests
    assert len(sent) == len(rows) and {b["model"] for b in sent} == {"stub"} and sent[0]["temperature"] == 0
    run_qa(eval_world, tiny_models, "jsonl-qa", tmp_path, "--judge-url", stub_judge, "--judge-name", "stub")
    assert len(_StubJudge.requests) == len(rows)  # verdicts come from videoqa_judge.jsonl on a rerun


def test_videoqa_unreachable_judge_is_one_line(eval_world, tiny_models, tmp_path, capsys):
    data = eval_world["jsonl-qa"]
    argv = ["eval", "videoqa", "--dataset", "jsonl", "--data-root", str(data.root), "--llava", tiny_models["default"],
            "--stan", tiny_models["stan"], "--frames", "2", "--max-new-tokens", "2", "--out", str(tmp_path),
            "--judge-url", "http://127.0.0.1:9/v1", "--judge-name", "nobody"]
    assert main(argv) == 2
    assert "cannot reach judge" in error_line(capsys.readouterr().err)


def test_videoqa_local_judge(eval_world, tiny_models, tmp_path):
    from tests.tiny_llava import tiny_tokenizer

    judge_dir = tmp_path / "judge"
    save_tiny_causal_lm(judge_dir, tiny_tokenizer())
    results = run_qa(eval_world, tiny_models, "msvd-qa", tmp_path / "out", "--judge-model", str(judge_dir))
    judge, metrics = results["judge"], results["metrics"]
    assert judge["kind"] == "local" and judge["name"] == str(judge_dir.resolve()) and judge["version"]
    verdicts = [json.loads(line) for line in (tmp_path / "out" / "videoqa_judge.jsonl").read_text().splitlines()]
    assert len(verdicts) == metrics["answered"]
    assert metrics["judge_unparsed"] == sum(v["verdict"] is None for v in verdicts)


def save_tiny_causal_lm(directory, tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_contains_scores_whole_words():
    assert contains("red", "red") and not contains("redder", "red")
