"""The real lmms-eval (0.7.3, in .venv-lmms made by scripts/test) runs `--model stanchat` offline on a
local task written here (`training.synthworld.mcq`): its generated answers equal `stanchat ask
--batch` at the same frame count, and its multiple-choice picks (by likelihood) equal `stanchat
eval mcq`'s on the same questions; two data-parallel ranks give the one-process run's samples."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lmms.lmms_env import ROOT, lmms_python as _python

FRAMES = 8  # not the default 16: the frame count must reach the model
TIMEOUT = 600  # seconds; a run takes about 40 on two shared cores

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    from training.synthworld.mcq import write_mcq
    from training.synthworld.world import WorldConfig

    return write_mcq(tmp_path_factory.mktemp("mcq"), n=8, seed=11, config=WorldConfig(frames=16))


def _run(questions, out: Path, home: Path, launcher: list[str]) -> dict:
    """lmms-eval's logged samples of both tasks, run by `launcher`: task name -> doc id -> sample."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(home), "PYTHONPATH": str(ROOT)}
    command = [*launcher, "-m", "lmms_eval", "--model", "stanchat", "--model_args",
               f"model=tiny,frames={FRAMES},device=cpu", "--batch_size", "3", "--tasks", ",".join(questions.tasks),
               "--include_path", str(questions.root), "--output_path", str(out), "--log_samples"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    found = {}
    for task in questions.tasks:
        files = list(out.rglob(f"*_samples_{task}.jsonl"))
        assert len(files) == 1, (task, sorted(p.name for p in out.rglob("*")), run.stderr[-3000:])
        rows = [json.loads(line) for line in files[0].read_text().splitlines()]
        found[task] = {row["doc_id"]: row for row in rows}
    return found


@pytest.fixture(scope="module")
def samples(questions, tmp_path_factory):
    return _run(questions, tmp_path_factory.mktemp("lmms-out"), tmp_path_factory.mktemp("hf-home"), [_python()])


def test_generated_answers_equal_ask_batch(questions, samples, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps({"id": i, "video": str(questions.root / q["video"]), "question": q["question"]})
                                + "\n" for i, q in enumerate(questions.items)))
    answers = tmp_path / "answers.jsonl"
    run = subprocess.run([sys.executable, "-m", "stanchat", "ask", "--batch", str(requests), "--out", str(answers),
                          "--model", "tiny", "--device", "cpu", "--frames", str(FRAMES), "--max-new-tokens", "8",
                          "--temperature", "0"], capture_output=True, text=True, timeout=TIMEOUT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    expected = {row["id"]: row["answer"] for row in map(json.loads, answers.read_text().splitlines())}
    generated = samples[questions.tasks[1]]
    assert len(generated) == len(questions.items) == len(expected)
    assert {i: generated[i]["filtered_resps"] for i in generated} == expected


def test_likelihood_choices_equal_eval_mcq(questions, samples, tmp_path):
    from stanchat.eval.config import MCQConfig
    from stanchat.eval.mcq import run_mcq

    results = run_mcq(MCQConfig(data=questions.questions, out=tmp_path, model="tiny", frames=FRAMES, device="cpu"))
    ours = [json.loads(line) for line in Path(results["predictions"]).read_text().splitlines()]
    scored = samples[questions.tasks[0]]
    assert len(scored) == len(ours)
    for i, row in enumerate(ours):
        # the plugin returns -log p (lmms-eval picks the smallest); the samples log writes it as text
        losses = [float(value) for value, _ in scored[i]["filtered_resps"]]
        assert losses == pytest.approx([-lp for lp in row["logprobs"]], rel=1e-4, abs=1e-4)
        assert losses.index(min(losses)) == row["choice"]
        assert scored[i]["acc"] == float(row["choice"] == row["answer"])


def test_data_parallel_ranks_give_the_same_samples(questions, samples, tmp_path):
    """Two processes (torchrun on CPU; on GPUs `accelerate launch`): each rank loads the model and
    answers its share, lmms-eval gathers; every sample equals the one-process run's."""
    python = _python()
    launcher = [python, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    parallel = _run(questions, tmp_path / "out", tmp_path / "home", launcher)
    for task in questions.tasks:
        assert {i: row["filtered_resps"] for i, row in parallel[task].items()} == \
            {i: row["filtered_resps"] for i, row in samples[task].items()}
