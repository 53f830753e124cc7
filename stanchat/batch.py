"""Many questions, answered in batches: `VideoChat.ask_many` and `stanchat ask --batch`.

A request is a dict: `video`, `question`, and optionally `id`, `frames`, `temporal`,
`max_new_tokens`, `temperature`. Requests are encoded one by one (a video asked about twice is
encoded once) and answered `batch_size` at a time by the transformers engine's padded `generate`,
so greedy answers equal `VideoChat.ask`'s. A request that cannot be answered (missing video, bad
field) gives an error record instead of stopping the rest.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from stanchat.errors import StanchatError
from stanchat.options import DEFAULTS, check_question, check_temporal

if TYPE_CHECKING:
    from stanchat.chat import VideoChat

logger = logging.getLogger(__name__)

FIELDS = ("id", "video", "question", "frames", "temporal", "max_new_tokens", "temperature")


def _job(chat: "VideoChat", request: dict, cache: dict):
    from stanchat.api.engines.base import Job, Sampling
    from stanchat.api.prompt import prompt_ids

    unknown = sorted(set(request) - set(FIELDS))
    if unknown:
        raise StanchatError(f"unknown field(s) {', '.join(unknown)}; a request takes {', '.join(FIELDS)}")
    if not isinstance(request.get("video"), str) or not isinstance(request.get("question"), str):
        raise StanchatError("a request needs a \"video\" path and a \"question\"")
    frames, temporal = int(request.get("frames", DEFAULTS.frames)), check_temporal(request.get("temporal", DEFAULTS.temporal))
    key = (request["video"], frames, temporal)
    if key not in cache:
        decoded = chat.decode(request["video"], frames)
        cache[key] = chat.features(decoded.pixel_values, temporal)[0]
    features = cache[key]
    ids = prompt_ids(chat.processor, [], check_question(request["question"]))
    chat.check_context(len(ids) - 1 + features.shape[1], features.shape[1], temporal, frames)
    sampling = Sampling(max_tokens=int(request.get("max_new_tokens", DEFAULTS.max_new_tokens)),
                        temperature=float(request.get("temperature", DEFAULTS.temperature)))
    return Job(prompt_ids=ids, features=features, sampling=sampling), int(features.shape[1])


def ask_many(chat: "VideoChat", requests: Iterable[dict], batch_size: int = 8) -> Iterator[dict]:
    """One record per request, in order, as each batch finishes: the request's `id` (its index if
    it has none) and `answer`, `video_tokens`, `finish_reason`; or `error`."""
    from stanchat.api.engines.hf import TransformersEngine

    engine = TransformersEngine(chat, max_batch=batch_size, batch_wait_ms=0)
    cache: dict = {}
    pending: list[tuple[dict, Any]] = []  # (record, (job, video tokens) or None)
    try:
        for index, request in enumerate(requests):
            record = {"id": request.get("id", index) if isinstance(request, dict) else index}
            try:
                if not isinstance(request, dict):
                    raise StanchatError("a request must be a JSON object")
                pending.append((record, _job(chat, request, cache)))
            except (StanchatError, ValueError, TypeError) as err:
                pending.append(({**record, "error": str(err)}, None))
            if len(pending) >= batch_size:
                yield from _answer(engine, pending)
                pending = []
        yield from _answer(engine, pending)
    finally:
        engine.close()


def _answer(engine, pending: list[tuple[dict, Any]]) -> Iterator[dict]:
    jobs = [prepared[0] for _, prepared in pending if prepared is not None]
    results = iter(engine.generate_many(jobs) if jobs else [])
    for record, prepared in pending:
        if prepared is None:
            yield record
            continue
        result = next(results)
        yield {**record, "answer": result.text, "video_tokens": prepared[1], "finish_reason": result.finish_reason}


def read_requests(path: str | Path, done: set) -> Iterator[dict | str]:
    """The requests of a JSONL file not yet in `done` (by id, else by line number); a bad line
    becomes a string (its error), so that it gets an error record."""
    with open(path) as f:
        for number, line in enumerate(f):
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except ValueError as err:
                request = {"error": f"line {number + 1} is not JSON ({err})"}
            if not isinstance(request, dict):
                request = {"error": f"line {number + 1} is not a JSON object"}
            request.setdefault("id", number)
            if request["id"] not in done:
                yield request


def answered_ids(path: str | Path) -> set:
    """Ids already answered in an output file (lines with an answer; errors are retried)."""
    done: set = set()
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by an interruption
            if isinstance(record, dict) and "answer" in record:
                done.add(record["id"])
    return done


def run_batch(chat: "VideoChat", requests_path: str, out_path: str, batch_size: int = 8) -> tuple[int, int]:
    """Answer a JSONL file into `out_path`, appending one flushed line per request; returns
    (answered, errors). Rerunning skips the requests already answered."""
    done = answered_ids(out_path)
    requests = list(read_requests(requests_path, done))
    bad = [r for r in requests if "error" in r]
    good = [r for r in requests if "error" not in r]
    answered = errors = 0
    with open(out_path, "a") as out:
        for record in [*({"id": r["id"], "error": r["error"]} for r in bad), *ask_many(chat, good, batch_size)]:
            out.write(json.dumps(record) + "\n")
            out.flush()
            answered += "answer" in record
            errors += "error" in record
    return answered, errors
