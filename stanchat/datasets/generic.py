"""The generic formats: JSONL (one object per line) and CSV (a header row), same fields.

Fields, paths relative to the data root:
- `video` (or `image`, for still-image samples): the file;
- then `caption` (retrieval / training; in JSONL also a list of captions, one record each),
  or `label` (recognition; cleaned like every class name), or `question` + `answer` (video QA);
- optional `video_id` (default: the path as written), `question_id`, `start` / `end`
  (seconds, to use a segment of a longer file) and `still` (an image showing the video's whole
  motion, e.g. a synthetic clip's trail still: training's `model.motion_still_weight` target).
A `.json` annotation holding a list of such objects is read the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from stanchat.datasets.base import Record, clean_class_name, load_json, read_csv, resolve_video
from stanchat.errors import StanchatError

_EXPECTED = "expected video (or image) and exactly one of caption, label or question+answer"


def read_jsonl(ann: Path, videos: Path, split: str) -> list[Record]:
    """Records from a `.jsonl` file (or a `.json` list) of `{"video": ..., "caption": ...}`-style objects."""
    records = []
    for where, item in _json_items(ann):
        if not isinstance(item, dict):
            raise StanchatError(f"{ann} {where}: expected a JSON object, found {type(item).__name__}")
        captions = item.get("caption")
        if isinstance(captions, list):
            records += [_record(ann, where, {**item, "caption": c}, videos) for c in captions]
        else:
            records.append(_record(ann, where, item, videos))
    return records


def read_generic_csv(ann: Path, videos: Path, split: str) -> list[Record]:
    """Records from a CSV file whose header names `video` (or `image`) and the task's columns."""
    found, rows = read_csv(ann, ())
    if not ({"video", "image"} & set(found) and {"caption", "label", "question"} & set(found)):
        raise StanchatError(f"{ann}: {_EXPECTED} columns; found {', '.join(found)}")
    return [_record(ann, f"line {i}", {k: v for k, v in row.items() if v != ""}, videos) for i, row in enumerate(rows, 2)]


def _json_items(ann: Path):
    """(where, parsed object) for each entry of a `.json` list or each non-empty `.jsonl` line."""
    if ann.suffix.lower() == ".json":
        data = load_json(ann)
        if not isinstance(data, list):
            raise StanchatError(f"{ann}: expected a JSON list of objects, found {type(data).__name__}")
        yield from ((f"entry {i}", item) for i, item in enumerate(data))
        return
    try:
        lines = ann.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise StanchatError(f"{ann} is not a UTF-8 text file; check --ann") from None
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as err:
                raise StanchatError(f"{ann} line {number} is not valid JSON ({err.msg})") from None


def _record(ann: Path, where: str, item: dict, root: Path) -> Record:
    """One Record from a generic entry, after checking it names a file and exactly one task."""
    rel = item.get("video", item.get("image"))
    tasks = [key for key in ("caption", "label", "question") if key in item]
    if rel is None or len(tasks) != 1 or ("question" in item) != ("answer" in item):
        raise StanchatError(f"{ann} {where}: {_EXPECTED}; found {', '.join(item) or 'nothing'}")
    start, end = (_seconds(ann, where, item.get(key)) for key in ("start", "end"))
    text = item.get("caption")
    label = item.get("label")
    return Record(
        video=resolve_video(root, str(rel)),
        video_id=str(item.get("video_id", rel)),
        text=None if text is None else str(text),
        label=None if label is None else clean_class_name(str(label)),
        question=None if "question" not in item else str(item["question"]),
        answer=None if "answer" not in item else str(item["answer"]),
        question_id=None if "question_id" not in item else str(item["question_id"]),
        start=start,
        end=end,
        still=None if "still" not in item else resolve_video(root, str(item["still"])),
    )


def _seconds(ann: Path, where: str, value) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise StanchatError(f"{ann} {where}: start/end must be seconds, found {value!r}") from None
