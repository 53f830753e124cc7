"""Many questions, answered in batches: `VideoChat.ask_many` and `stanchat ask --batch`.

A request is a dict: `video`, `question`, and optionally `id` and any option in `OPTIONS`
(`frames`, `temporal`, `strategy`, `fps`, `start`, `end`, `seed`, `segments`, `select`,
`candidates`; `max_new_tokens`, `temperature`, `top_p`); an option a request leaves out comes from the run's `defaults` (the command's flags), then
the library's defaults. Videos are encoded through `VideoChat.encode` (its cache keeps the last few,
so a video asked about in a row is encoded once) and the questions answered `batch_size` at a time
by the chat's engine, so greedy answers equal `VideoChat.ask`'s. A request that cannot be answered
(missing or broken video, bad field, repeated id) gives an error record instead of stopping the
rest; Ctrl-C still stops the run.

Ids are a string or an integer, unique in one run; a request without one is called
"request N" (`ask_many`) or "line N" (`--batch`), both counted from 1. That form is reserved: an id
of it given explicitly is that request's error (it could be another request's).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from stanchat.engine.base import Job, Sampling
from stanchat.engine.prompt import make_job
from stanchat.errors import StanchatError
from stanchat.options import DEFAULTS, VIDEO_OPTIONS, VideoOptions
from stanchat.session import sampling_of

if TYPE_CHECKING:
    from stanchat.chat import VideoChat
    from stanchat.encoding import EncodedVideo

logger = logging.getLogger(__name__)

SAMPLING_OPTIONS = ("max_new_tokens", "temperature", "top_p")
OPTIONS = VIDEO_OPTIONS + SAMPLING_OPTIONS
FIELDS = ("id", "video", "question") + OPTIONS


def _job(chat: "VideoChat", request: dict, defaults: dict[str, Any]) -> tuple[Job, "EncodedVideo"]:
    """The request's job and its encoded video; raises StanchatError naming the field at fault."""
    unknown = sorted(set(request) - set(FIELDS))
    if unknown:
        raise StanchatError(f"unknown field(s) {', '.join(unknown)}; a request takes {', '.join(FIELDS)}")
    if not isinstance(request.get("video"), str) or not isinstance(request.get("question"), str):
        raise StanchatError("a request needs a \"video\" path and a \"question\"")
    given = {**defaults, **{k: v for k, v in request.items() if k in OPTIONS}}
    options = VideoOptions(**{k: v for k, v in given.items() if k in VIDEO_OPTIONS})
    sampling = sampling_of(**{k: v for k, v in given.items() if k in SAMPLING_OPTIONS})
    return question_job(chat, request["video"], request["question"], options, sampling)


def question_job(chat: "VideoChat", video: str, question: str, options: VideoOptions,
                 sampling: Sampling) -> tuple[Job, "EncodedVideo"]:
    """The engine's job answering `question` about `video` (its prompt checked before anything is
    decoded; the frames selected by the question under select=question; one block per window
    under temporal segments), and the encoded video."""
    chat.check_prompt(options, question)  # before decoding
    encoded = chat.encode(video, options, question=question)
    job, _ = make_job(chat.processor, chat.context_length, encoded.features, encoded.frames, options.temporal,
                      [], question, sampling, spans=encoded.spans)
    return job, encoded


def video_record(encoded: "EncodedVideo") -> dict:
    """What a record says of the video: the frames used (their count and times), the video tokens;
    the frames' weights when the question selected them; each window's span under temporal segments."""
    record: dict[str, Any] = {"frames": encoded.frames, "timestamps": [round(float(t), 3) for t in encoded.clip.timestamps],
                              "video_tokens": encoded.video_tokens}
    if encoded.weights is not None:
        record["weights"] = [round(w, 4) for w in encoded.weights]
    if encoded.spans is not None:
        record["spans"] = [[round(a, 3), round(b, 3)] for a, b in encoded.spans]
    return record


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


def _prepare(chat: "VideoChat", named: Named, defaults: dict[str, Any]) -> tuple[dict, Any]:
    """(record, (job, encoded video)), or (record with its error, None)."""
    record = {"id": named.id}
    if named.request is None:
        return {**record, "error": named.error}, None
    try:
        return record, _job(chat, named.request, defaults)
    except (StanchatError, ValueError, TypeError) as err:
        return {**record, "error": str(err)}, None
    except Exception as err:  # a decoder or the tower failing on this video: this request's error only
        logger.debug("request %s failed", record["id"], exc_info=True)
        return {**record, "error": f"{type(err).__name__}: {err}"}, None


def ask_many(chat: "VideoChat", requests: Iterable[dict], batch_size: int = DEFAULTS.batch_size,
             defaults: dict[str, Any] | None = None) -> Iterator[dict]:
    """One record per request, in order, as each batch finishes: the request's `id` and `answer`,
    `frames`, `timestamps`, `video_tokens` (and under select=question the `weights` of the frames used,
    under temporal segments their `spans`), `finish_reason`; or `error`. A request without an id is called "request N";
    `defaults` fills the options a request leaves out (names in `OPTIONS`)."""
    seen: set = set()
    return answer_named((name_request(request, seen, "request", number) for number, request in enumerate(requests, 1)),
                        chat, batch_size, defaults)


def answer_named(requests: Iterable[Named], chat: "VideoChat", batch_size: int = DEFAULTS.batch_size,
                 defaults: dict[str, Any] | None = None) -> Iterator[dict]:
    """`ask_many` of requests already named (refused ones give their error record in their place)."""
    if batch_size < 1:
        raise StanchatError(f"the batch size must be at least 1, got {batch_size}", param="batch_size")
    unknown = sorted(set(defaults or {}) - set(OPTIONS))
    if unknown:
        raise StanchatError(f"unknown default(s) {', '.join(unknown)}; defaults take {', '.join(OPTIONS)}")
    pending: list[tuple[dict, Any]] = []  # (record, (job, encoded video) or None)
    for named in requests:
        pending.append(_prepare(chat, named, defaults or {}))
        if len(pending) >= batch_size:
            yield from _answer(chat.engine, pending)
            pending = []
    yield from _answer(chat.engine, pending)


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
        yield {**record, "answer": result.text, **video_record(prepared[1]), "finish_reason": result.finish_reason}


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


def answer_file(chat: "VideoChat", requests_path: str, out_path: str, batch_size: int = DEFAULTS.batch_size,
                defaults: dict[str, Any] | None = None) -> tuple[int, int]:
    """Answer a JSONL file into `out_path`, appending one flushed line per request; returns
    (answered, errors). Rerunning skips the requests already answered. `defaults` as in `ask_many`."""
    requests = list(read_requests(requests_path, answered_ids(out_path)))
    answered = errors = 0
    with open(out_path, "a") as out:  # each record written as its batch finishes
        for record in answer_named(requests, chat, batch_size, defaults):
            out.write(json.dumps(record) + "\n")
            out.flush()
            answered += "answer" in record
            errors += "error" in record
    return answered, errors
