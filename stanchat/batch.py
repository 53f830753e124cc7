"""Many questions, answered in batches: `VideoChat.ask_many` and `stanchat ask --batch`.

A request is a dict: `video`, `question`, and optionally `id`, `frames`, `temporal`,
`max_new_tokens`, `temperature`. Requests are encoded one by one (the last few videos' features
are kept, so a video asked about in a row is encoded once) and answered `batch_size` at a time by
the transformers engine's padded `generate`, so greedy answers equal `VideoChat.ask`'s. A request
that cannot be answered (missing or broken video, bad field, repeated id) gives an error record
instead of stopping the rest; Ctrl-C still stops the run.

Ids are a string or an integer, unique in one run; a request without one is called
"request N" (`ask_many`) or "line N" (`--batch`), both counted from 1. That form is reserved: an id
of it given explicitly is that request's error (it could be another request's).
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from stanchat.errors import StanchatError
from stanchat.options import DEFAULTS, check_question, check_temporal

if TYPE_CHECKING:
    from stanchat.chat import VideoChat

logger = logging.getLogger(__name__)

FIELDS = ("id", "video", "question", "frames", "temporal", "max_new_tokens", "temperature")
FEATURE_CACHE = 4  # encoded videos kept (LRU): a file asking several questions per video in a row encodes it once


class _Features:
    """The last `size` videos' projected features, keyed by (video, frames, temporal)."""

    def __init__(self, chat: "VideoChat", size: int = FEATURE_CACHE):
        self.chat, self.size = chat, size
        self._cache: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, video: str, frames: int, temporal: str):
        key = (video, frames, temporal)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        decoded = self.chat.decode(video, frames)
        features = self.chat.features(decoded.pixel_values, temporal)[0]  # (1, N, E)
        self._cache[key] = features
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return features


def _job(chat: "VideoChat", request: dict, features_of: _Features):
    from stanchat.api.engines.base import Job, Sampling
    from stanchat.api.prompt import prompt_ids

    unknown = sorted(set(request) - set(FIELDS))
    if unknown:
        raise StanchatError(f"unknown field(s) {', '.join(unknown)}; a request takes {', '.join(FIELDS)}")
    if not isinstance(request.get("video"), str) or not isinstance(request.get("question"), str):
        raise StanchatError("a request needs a \"video\" path and a \"question\"")
    frames, temporal = int(request.get("frames", DEFAULTS.frames)), check_temporal(request.get("temporal", DEFAULTS.temporal))
    features = features_of.get(request["video"], frames, temporal)
    ids = prompt_ids(chat.processor, [], check_question(request["question"]))
    chat.check_context(len(ids) - 1 + features.shape[1], features.shape[1], temporal, frames)
    sampling = Sampling(max_tokens=int(request.get("max_new_tokens", DEFAULTS.max_new_tokens)),
                        temperature=float(request.get("temperature", DEFAULTS.temperature)))
    return Job(prompt_ids=ids, features=features, sampling=sampling), int(features.shape[1])


@dataclass
class Named:
    """A request with its id, or (request None) the id its refusal is recorded under and why."""

    id: Any
    request: dict | None = None
    error: str | None = None


def claim_id(request: dict, seen: set, form: str, number: int) -> Any:
    """The request's id, added to `seen`: its own, else f"{form} {number}". Refuses an id that is
    not a string or an integer, that has the reserved form "{form} N", or that is in `seen`."""
    where = f"{form} {number}"
    request_id = request.get("id", where)
    if "id" in request:
        if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
            raise StanchatError(f"{where}: id must be a string or an integer, got {json.dumps(request_id)}")
        if isinstance(request_id, str) and re.fullmatch(rf"{form} [0-9]+", request_id):
            raise StanchatError(f"{where}: the id {json.dumps(request_id)} has the form \"{form} N\" given to "
                                f"{form}s without an id; choose another id")
    if request_id in seen:
        raise StanchatError(f"{where}: the id {json.dumps(request_id)} is taken by an earlier request; "
                            "give each request its own id")
    seen.add(request_id)
    return request_id


def name_request(request: Any, seen: set, form: str, number: int) -> Named:
    """The request named by `claim_id`, or its refusal recorded as f"{form} {number}"."""
    try:
        if not isinstance(request, dict):
            raise StanchatError(f"{form} {number} is not a JSON object")
        return Named(claim_id(request, seen, form, number), request)
    except StanchatError as err:
        return Named(f"{form} {number}", error=str(err))


def _prepare(chat: "VideoChat", named: Named, features_of: _Features) -> tuple[dict, Any]:
    """(record, (job, video tokens)), or (record with its error, None)."""
    record = {"id": named.id}
    if named.request is None:
        return {**record, "error": named.error}, None
    try:
        return record, _job(chat, named.request, features_of)
    except (StanchatError, ValueError, TypeError) as err:
        return {**record, "error": str(err)}, None
    except Exception as err:  # a decoder or the tower failing on this video: this request's error only
        logger.debug("request %s failed", record["id"], exc_info=True)
        return {**record, "error": f"{type(err).__name__}: {err}"}, None


def ask_many(chat: "VideoChat", requests: Iterable[dict], batch_size: int = 8) -> Iterator[dict]:
    """One record per request, in order, as each batch finishes: the request's `id` and `answer`,
    `video_tokens`, `finish_reason`; or `error`. A request without an id is called "request N"."""
    seen: set = set()
    return answer_named((name_request(request, seen, "request", number) for number, request in enumerate(requests, 1)),
                        chat, batch_size)


def answer_named(requests: Iterable[Named], chat: "VideoChat", batch_size: int) -> Iterator[dict]:
    """`ask_many` of requests already named (refused ones give their error record in their place)."""
    from stanchat.api.engines.hf import TransformersEngine

    engine = TransformersEngine(chat, max_batch=batch_size, batch_wait_ms=0)
    features_of = _Features(chat)
    pending: list[tuple[dict, Any]] = []  # (record, (job, video tokens) or None)
    try:
        for named in requests:
            pending.append(_prepare(chat, named, features_of))
            if len(pending) >= batch_size:
                yield from _answer(engine, pending)
                pending = []
        yield from _answer(engine, pending)
    finally:
        engine.close()


def _answer(engine, pending: list[tuple[dict, Any]]) -> Iterator[dict]:
    jobs = [prepared[0] for _, prepared in pending if prepared is not None]
    try:
        results = iter(engine.generate_many(jobs) if jobs else [])
    except Exception as err:  # e.g. out of memory: this batch's requests get the error, the run goes on
        logger.debug("a batch failed", exc_info=True)
        error = f"{type(err).__name__}: {err}"
        yield from (record if prepared is None else {**record, "error": error} for record, prepared in pending)
        return
    for record, prepared in pending:
        if prepared is None:
            yield record
            continue
        result = next(results)
        yield {**record, "answer": result.text, "video_tokens": prepared[1], "finish_reason": result.finish_reason}


def read_requests(path: str | Path, done: set) -> Iterator[Named]:
    """The requests of a JSONL file whose id is not in `done`, named as `name_request` does ("line N"); a
    line that is not a request, or whose id is refused, comes as its refusal under "line N"."""
    seen: set = set()
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                named = name_request(json.loads(line), seen, "line", number)
            except ValueError as err:
                named = Named(f"line {number}", error=f"line {number} is not JSON ({err})")
            if named.id not in done:
                yield named


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
    requests = list(read_requests(requests_path, answered_ids(out_path)))
    answered = errors = 0
    with open(out_path, "a") as out:  # each record written as its batch finishes
        for record in answer_named(requests, chat, batch_size):
            out.write(json.dumps(record) + "\n")
            out.flush()
            answered += "answer" in record
            errors += "error" in record
    return answered, errors
