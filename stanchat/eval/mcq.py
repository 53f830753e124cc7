"""Multiple-choice video QA scored by likelihood: no judge, no answer parsing, the same number on every run.

Each question's options are scored as the chat model's answer (`stanchat.choice.score_answers`: the
summed log-probability of the option's tokens after the question and the video) and the likeliest
is its choice (`choose`). The input is a JSONL file, one question a line:

    {"id": "q1", "video": "videos/a.mp4", "question": "Which way does the red circle move?",
     "options": ["left", "right"], "answer": 0, "kind": "direction"}

`answer` is the index of the right option (or its text); `kind` (optional) groups the accuracy;
video paths are relative to the file's folder (or `--data-root`). This is the file the lmms-eval task
of `training.synthworld.mcq` reads too, with the question as the context and the options as the
choices, so `stanchat eval mcq` and lmms-eval's `--model stanchat` make the same choices.
Writes mcq.json (accuracy overall and per kind), mcq.md, mcq.png and mcq_predictions.jsonl
(every option's log-probability).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from stanchat.eval.config import MCQConfig
from stanchat.eval.report import markdown_table, write_report
from stanchat.errors import StanchatError

PREDICTIONS = "mcq_predictions.jsonl"


def read_questions(path: Path, root: Path | None = None) -> list[dict]:
    """The questions of a JSONL file, checked, with `video` resolved and `answer` an option index."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise StanchatError(f"{path} not found; pass a JSONL of multiple-choice questions as --data")
    root = Path(root).expanduser() if root is not None else path.parent
    questions = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            questions.append(_question(json.loads(line), root, f"{path} line {number}", len(questions)))
    if not questions:
        raise StanchatError(f"{path} holds no questions")
    if len({q["id"] for q in questions}) != len(questions):
        raise StanchatError(f"{path}: question ids repeat; give each question its own id")
    return questions


def _question(item: dict, root: Path, where: str, index: int) -> dict:
    missing = [key for key in ("video", "question", "options", "answer") if key not in item]
    if missing:
        raise StanchatError(f"{where}: missing {', '.join(missing)}")
    options = item["options"]
    if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) and o.strip() for o in options):
        raise StanchatError(f"{where}: options must be a list of at least two non-empty strings")
    answer = item["answer"]
    if isinstance(answer, str) and answer in options:
        answer = options.index(answer)
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(options):
        raise StanchatError(f"{where}: answer must be an option's index (0-{len(options) - 1}) or its text")
    return {"id": str(item.get("id", index)), "video": str(root / item["video"]), "question": item["question"],
            "options": options, "answer": answer, "kind": str(item.get("kind", "all"))}


def run_mcq(cfg: MCQConfig) -> dict:
    """Score every option of every question, choose, and write the report; returns the results."""
    import stanchat
    from stanchat.choice import choose, score_answers
    from stanchat.eval.features import process_state

    if process_state().num_processes > 1:
        raise StanchatError("stanchat eval mcq runs in one process (it only scores); run it without accelerate "
                            "launch, or use lmms-eval's --model stanchat for data-parallel runs")
    questions = read_questions(cfg.data, cfg.data_root)
    chat = stanchat.load(cfg.model, llava=cfg.llava, stan=cfg.stan, device=cfg.device, dtype=cfg.dtype)
    requests = [{"video": q["video"], "question": q["question"], "answer": option}
                for q in questions for option in q["options"]]
    scores = iter(score_answers(chat, requests, cfg.batch_size, {"frames": cfg.frames, "temporal": cfg.temporal}))
    rows = []
    for q in questions:
        mine = [next(scores) for _ in q["options"]]
        rows.append({**q, "choice": choose(mine), "logprobs": [s.logprob for s in mine]})
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / PREDICTIONS).write_text("".join(json.dumps(row) + "\n" for row in rows))
    results = {"task": "mcq", "metrics": accuracy(rows), "model": chat.name, "data": str(cfg.data),
               "settings": {k: v for k, v in asdict(cfg).items() if k not in ("data", "out")},
               "predictions": str(Path(cfg.out) / PREDICTIONS)}
    write_report(cfg.out, "mcq", results, mcq_markdown(results), lambda figure: plot_kinds(figure, results))
    return results


def accuracy(rows: list[dict]) -> dict:
    """Accuracy in percent over all questions and per kind, with the counts."""
    def percent(group: list[dict]) -> float:
        return 100.0 * sum(r["choice"] == r["answer"] for r in group) / len(group)

    kinds = sorted({r["kind"] for r in rows})
    return {"accuracy": percent(rows), "questions": len(rows),
            "per_kind": {k: {"accuracy": percent([r for r in rows if r["kind"] == k]),
                             "questions": sum(r["kind"] == k for r in rows)} for k in kinds}}


def mcq_markdown(results: dict) -> str:
    m, s = results["metrics"], results["settings"]
    title = (f"## Multiple choice by likelihood: {Path(results['data']).name} ({m['questions']} questions)\n\n"
             f"model `{results['model']}`, {s['frames']} frames, temporal {s['temporal']}\n\n")
    rows = [["all", m["questions"], m["accuracy"]]]
    rows += [[kind, v["questions"], v["accuracy"]] for kind, v in m["per_kind"].items()]
    return title + markdown_table(["kind", "questions", "accuracy"], rows)


def plot_kinds(figure, results: dict) -> None:
    per = results["metrics"]["per_kind"]
    ax = figure.subplots()
    ax.bar(list(per), [v["accuracy"] for v in per.values()])
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{Path(results['data']).name}: {results['metrics']['accuracy']:.1f}% "
                 f"({results['settings']['temporal']}, {results['settings']['frames']} frames)")
