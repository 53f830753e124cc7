"""Open-ended video QA with the chat model: predictions written as they come, scored at the end.

Every answer is appended to `videoqa_predictions.jsonl` in `--out` the moment it exists (one file
per process under `accelerate launch`), so an interrupted run resumes where it stopped: questions
whose id already has a prediction are skipped, and a resume with different settings is refused.
Scores:
- exact: the normalised prediction equals the normalised reference (lower-cased, punctuation and
  the articles a/an/the removed, whitespace collapsed; SQuAD's normalisation);
- contains: the normalised reference appears in the normalised prediction as whole words;
- judge (only with `--judge-model` or `--judge-url`): the judge's yes/no, cached per question in
  `videoqa_judge.jsonl` with the judge's name, so a resume never asks twice.
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from stanchat.eval.common import read_annotation
from stanchat.eval.config import VideoQAConfig
from stanchat.eval.report import markdown_table, write_report
from stanchat.errors import StanchatError

logger = logging.getLogger(__name__)

PREDICTIONS = "videoqa_predictions"  # + ".jsonl", or "-rank{r}.jsonl" under several processes
JUDGMENTS = "videoqa_judge.jsonl"
RUN_FILE = "videoqa_run.json"  # the settings the predictions were made with
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation})


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def exact_match(prediction: str, answer: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(answer)


def contains(prediction: str, answer: str) -> bool:
    """The normalised answer occurs in the normalised prediction as a run of whole words."""
    reference = normalize_answer(answer)
    return bool(reference) and f" {reference} " in f" {normalize_answer(prediction)} "


def question_ids(records: list) -> list[str]:
    """Stable, unique ids: the dataset's question id (suffixed `#k` where an annotation repeats one),
    else `video_id/k` for the video's k-th question."""
    seen: Counter = Counter()
    ids = []
    for record in records:
        base = str(record.question_id) if record.question_id is not None else f"{record.video_id}/"
        k = seen[base]
        seen[base] += 1
        if record.question_id is None:
            ids.append(f"{base}{k}")
        else:
            ids.append(base if k == 0 else f"{base}#{k}")
    return ids


def read_jsonl(paths: list[Path]) -> dict[str, dict]:
    """id -> the last line written for it, over several append-only JSONL files."""
    rows: dict[str, dict] = {}
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: that question is asked again
                logger.warning("ignoring unreadable line %d of %s", number, path)
                continue
            rows[row["id"]] = row
    return rows


def open_log(path: Path):
    """Open an append-only JSONL log, first ending a line a killed run left unfinished (that
    half line is ignored by `read_jsonl`; the next record must not be glued to it)."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as handle:
            handle.seek(-1, 2)
            unfinished = handle.read(1) != b"\n"
        if unfinished:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write("\n")
    return open(path, "a", encoding="utf-8")


def prediction_files(out: Path) -> list[Path]:
    return sorted(Path(out).glob(f"{PREDICTIONS}*.jsonl"))


def check_resume(out: Path, settings: dict) -> None:
    """Record the settings of the first run in `out`; refuse to continue it with other settings."""
    path = Path(out) / RUN_FILE
    if path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise StanchatError(f"{out} holds predictions made with other settings ({', '.join(changed)} differ); "
                                f"pass a new --out, or delete {out} to start over")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def resume_settings(cfg: VideoQAConfig, ann_file: Path) -> dict:
    """What must not change between a run and its resumption."""
    keys = ("dataset", "model", "llava", "stan", "frames", "temporal", "prompt", "max_new_tokens", "dtype", "split")
    from stanchat.eval.features import file_sha256

    values = asdict(cfg)
    return {**{k: str(values[k]) for k in keys}, "annotation": str(ann_file),
            "annotation_sha256": file_sha256(ann_file) if ann_file.is_file() else None}


def run_videoqa(cfg: VideoQAConfig) -> dict:
    """Answer every question (resuming), score, and write videoqa.{json,md,png}; returns the results."""
    from stanchat.eval.features import process_state

    state = process_state()
    _check_prompt(cfg.prompt)
    judge = _make_judge(cfg)  # fail on bad judge options before any answering
    model = chat_model_info(cfg)  # and on a missing model, before reading every video
    annotation = read_annotation(cfg, "qa")
    ids = question_ids(annotation.records)
    if state.is_main_process:
        check_resume(cfg.out, resume_settings(cfg, annotation.ann_file))
    state.wait_for_everyone()
    done = {i for i, row in read_jsonl(prediction_files(cfg.out)).items() if "prediction" in row}
    todo = [(i, r) for i, r in zip(ids, annotation.records) if i not in done]
    logger.info("%d questions, %d answered before, %d to answer", len(ids), len(ids) - len(todo), len(todo))
    with state.split_between_processes(todo) as mine:
        if mine:
            _answer_all(cfg, mine, _own_file(cfg.out, state), cfg.device or state.device)
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    return _score_and_report(cfg, annotation, ids, judge, model)


def _check_prompt(prompt: str) -> None:
    if prompt.count("{question}") != 1:
        raise StanchatError("--prompt needs exactly one {question} where the question goes")


def _make_judge(cfg: VideoQAConfig):
    from stanchat.eval.judge import make_judge

    return make_judge(cfg.judge_model, cfg.judge_url, cfg.judge_name, cfg.judge_key_env, cfg.device)


def _own_file(out: Path, state) -> Path:
    suffix = ".jsonl" if state.num_processes == 1 else f"-rank{state.process_index}.jsonl"
    return Path(out) / f"{PREDICTIONS}{suffix}"


def _answer_all(cfg: VideoQAConfig, todo: list[tuple[str, object]], path: Path, device) -> None:
    """Ask the chat model each question, appending one JSON line per answer (flushed at once)."""
    from tqdm.auto import tqdm

    import stanchat
    from stanchat.errors import VideoError
    from stanchat.video import load_video

    chat = stanchat.load(cfg.model, llava=cfg.llava, stan=cfg.stan, device=device, dtype=cfg.dtype)
    with open_log(path) as log:
        for qid, record in tqdm(todo, desc="answering", unit="question"):
            row = {"id": qid, "video": str(record.video), "question": record.question, "answer": record.answer}
            try:
                clip = load_video(record.video, frames=cfg.frames, start=record.start, end=record.end)
                answer = chat.ask(clip, cfg.prompt.format(question=record.question), frames=cfg.frames,
                                  temporal=cfg.temporal, max_new_tokens=cfg.max_new_tokens, temperature=0.0)
                row["prediction"] = answer.text
            except VideoError as err:
                logger.warning("skipping %s: %s", record.video, err)
                row["error"] = str(err)
            log.write(json.dumps(row) + "\n")
            log.flush()


def chat_model_info(cfg: VideoQAConfig) -> dict:
    """Which chat model answers (stanchat.pretrained.resolve, required: fails in one line if its files are
    missing), with fingerprints of local directories."""
    from stanchat.eval.model import fingerprint
    from stanchat.pretrained import resolve

    spec = resolve(cfg.model, cfg.llava, cfg.stan).require()
    llava = Path(spec.llava).expanduser()
    return {"name": spec.name, "llava": spec.llava, "stan": str(spec.stan), "stan_fingerprint": fingerprint(spec.stan),
            "llava_fingerprint": fingerprint(llava) if llava.is_dir() else None}


def _score_and_report(cfg: VideoQAConfig, annotation, ids: list[str], judge, model: dict) -> dict:
    rows = read_jsonl(prediction_files(cfg.out))
    answered = [rows[i] for i in ids if i in rows and "prediction" in rows[i]]
    failed = {rows[i]["video"]: rows[i]["error"] for i in ids if i in rows and "error" in rows[i]}
    if not answered:
        raise StanchatError(f"no question could be answered ({len(failed)} videos failed to decode)")
    for row in answered:
        row["exact"] = exact_match(row["prediction"], row["answer"])
        row["contains"] = contains(row["prediction"], row["answer"])
    metrics = {"exact_match": _percent(r["exact"] for r in answered),
               "contains": _percent(r["contains"] for r in answered), "answered": len(answered)}
    judge_info = None
    if judge is not None:
        verdicts = _judge_all(judge, answered, Path(cfg.out) / JUDGMENTS)
        known = [v for v in verdicts if v is not None]
        metrics.update(judge_accuracy=_percent(known) if known else None, judge_unparsed=len(verdicts) - len(known))
        judge_info = judge.info
    missing = sorted({str(r.video) for r in annotation.missing})
    results = {
        "task": "videoqa", "metrics": metrics, "judge": judge_info,
        "prompt": cfg.prompt, "model": model,
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("dataset", "data_root", "ann", "out")},
        "dataset": {"name": cfg.dataset, "annotation": str(annotation.ann_file),
                    "counts": {"questions": len(ids) + len(annotation.missing), "answered": len(answered),
                               "questions_missing_video": len(annotation.missing), "videos_missing": len(missing),
                               "videos_undecodable": len(failed)},
                    "skipped": {"missing": missing, "undecodable": failed}},
        "predictions": [str(p) for p in prediction_files(cfg.out)],
        "per_answer": _per_answer(answered),
    }
    write_report(cfg.out, "videoqa", results, videoqa_markdown(results), lambda fig: plot_per_answer(fig, results))
    return results


def _percent(flags) -> float:
    flags = [bool(f) for f in flags]
    return 100.0 * sum(flags) / len(flags)


def _judge_all(judge, answered: list[dict], path: Path) -> list[bool | None]:
    """Verdicts for every answered question, reusing this judge's earlier verdicts from `path`."""
    from tqdm.auto import tqdm

    earlier = read_jsonl([path]) if path.is_file() else {}
    verdicts = []
    with open_log(path) as log:
        for row in tqdm(answered, desc="judging", unit="answer"):
            old = earlier.get(row["id"])
            if old is not None and old["judge"] == judge.info["name"] and old["prediction"] == row["prediction"]:
                verdicts.append(old["verdict"])
                continue
            verdict, reply = judge.judge(row["question"], row["answer"], row["prediction"])
            log.write(json.dumps({"id": row["id"], "judge": judge.info["name"], "prediction": row["prediction"],
                                  "verdict": verdict, "reply": reply}) + "\n")
            log.flush()
            verdicts.append(verdict)
    return verdicts


def _per_answer(answered: list[dict], top: int = 20) -> list[dict]:
    """Exact-match accuracy for the `top` most frequent reference answers."""
    groups: dict[str, list[bool]] = {}
    for row in answered:
        groups.setdefault(normalize_answer(row["answer"]), []).append(row["exact"])
    common = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    return [{"answer": a, "count": len(hits), "exact_match": _percent(hits)} for a, hits in common]


def videoqa_markdown(results: dict) -> str:
    m, s = results["metrics"], results["settings"]
    judge = results["judge"]
    title = (f"## Video QA: {results['dataset']['name']} ({m['answered']} answered)\n\n"
             f"model `{results['model']['name']}`, {s['frames']} frames, "
             f"temporal {s['temporal']}, judge {judge['name'] if judge else 'none'}\n\n")
    header, row = ["exact match", "contains"], [m["exact_match"], m["contains"]]
    if judge:
        header.append("judge")
        row.append("n/a" if m["judge_accuracy"] is None else m["judge_accuracy"])
    counts = results["dataset"]["counts"]
    note = f"\nskipped: {counts['videos_missing']} missing, {counts['videos_undecodable']} undecodable videos\n"
    return title + markdown_table(header, [row]) + note


def plot_per_answer(figure, results: dict) -> None:
    per = results["per_answer"]
    ax = figure.subplots()
    ax.barh(range(len(per)), [p["exact_match"] for p in per])
    ax.set_yticks(range(len(per)), [f"{p['answer']} ({p['count']})" for p in per], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("exact match (%)")
    ax.set_title(f"{results['dataset']['name']}: accuracy by reference answer "
                 f"(overall {results['metrics']['exact_match']:.1f}%)")
