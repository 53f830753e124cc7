"""The OpenAI chat-completions request body -> a checked `ChatRequest`; responses and chunks.

A conversation is about one video (or image): a `video_url` or `image_url` part in the first
user message, or that video's frames as an ordered list of `image_url` parts (as GPT-4-style
clients and lmms-eval send a video; `frames` samples them uniformly when there are more, `fps` is
their rate). Later turns are text; the history is what the client resends, as the API does it.
stanchat's own fields sit beside the API's: `frames`, `temporal`, `fps`, `start`, `end`,
`segments`, `select`, `candidates` (openai client: `extra_body={...}`); so does vLLM's
`media_io_kwargs: {"video": {"num_frames": N, "fps": R}}` (the same as frames and fps, within the
same limits; given both ways, they must agree), at the top level or inside an `extra_body` object.
Sampling uses the API's fields: `temperature` (default 0, greedy, as in `stanchat ask`), `top_p`,
`max_tokens` / `max_completion_tokens`, `seed`, `stop`.
Fields of the API that stanchat does not do and that would change the answer are refused with a
400 naming the field, unless they hold the value that means "not used" (`UNSUPPORTED`): tools,
tool_choice, functions, function_call, response_format, logprobs, top_logprobs, n, logit_bias,
frequency_penalty, presence_penalty, audio, prediction, modalities, reasoning_effort, verbosity,
web_search_options. Fields that do not change the answer are ignored: metadata, store, user,
safety_identifier, prompt_cache_key, service_tier, and parallel_tool_calls (it matters only with
tools); so is any other field this module does not read.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from stanchat.engine.base import Sampling
from stanchat.errors import StanchatError
from stanchat.options import VideoOptions
from stanchat.api.errors import ApiError, client_error
from stanchat.options import DEFAULTS, MAX_CANDIDATES, SELECT_MODES, TEMPORAL_MODES

MEDIA_PARTS = {"video_url": "video", "image_url": "image"}
MAX_IMAGES = MAX_CANDIDATES  # image_url parts one video's frame list may have (select=question scores them all)
VIDEO_IO = {"num_frames": "frames", "fps": "fps"}  # vLLM's media_io_kwargs.video keys -> stanchat's fields
MAX_STOP = 4  # stop strings at most, as in the OpenAI API
MAX_SEED = 2**63 - 1  # seeds are int64 in torch and vLLM
MAX_FLOAT = 1e300  # a float field's largest magnitude (a larger JSON integer would not convert to a float)
# API fields stanchat does not do -> the values that mean "not used" (absent or null always do)
UNSUPPORTED = {"tools": ([],), "tool_choice": ("none",), "functions": ([],), "function_call": ("none",),
               "response_format": ({"type": "text"},), "logprobs": (False,), "top_logprobs": (0,),
               "n": (1,), "logit_bias": ({},), "frequency_penalty": (0,), "presence_penalty": (0,),
               "audio": (), "prediction": (), "modalities": (["text"],), "reasoning_effort": (),
               "verbosity": ("medium",), "web_search_options": ()}


@dataclass
class ChatRequest:
    media_urls: tuple[str, ...]  # the video's (or image's) URL; under "frames", each frame's, in order
    media_kind: str  # "video", "image" or "frames" (a video as its frames, one image each)
    question: str  # the last user message's text
    history: list[tuple[str, str]] = field(default_factory=list)  # earlier (user, assistant) turns
    system: str | None = None
    video: VideoOptions = field(default_factory=VideoOptions)
    frame_rate: float | None = None  # under "frames": the images' rate (fps; their times i / rate), None: one a second
    sampling: Sampling = field(default_factory=Sampling)
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage
    model: str | None = None

    @property
    def media_url(self) -> str:
        """The video's (or image's, or first frame's) URL."""
        return self.media_urls[0]


def _number(body: dict, name: str, kind: type, default: Any, low: float | None = None, high: float | None = None):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ApiError(400, f"{name} must be a{'n integer' if kind is int else ' number'}, got {value!r}", param=name)
    # NaN and infinities (not JSON, but Python's parser reads them) would pass every range check
    if isinstance(value, float) and not math.isfinite(value) or kind is float and abs(value) > MAX_FLOAT:
        shown = f"{value}" if isinstance(value, float) else "a larger integer"
        raise ApiError(400, f"{name} must be a finite number of at most {MAX_FLOAT:g}, got {shown}", param=name)
    if (low is not None and value < low) or (high is not None and value > high):
        shown = f"{value:.6g}" if isinstance(value, float) or abs(value) < 10**18 else "a larger integer"
        raise ApiError(400, f"{name} must be in [{low}, {high}], got {shown}", param=name)
    return kind(value)


def _text_of(content: Any, index: int, allow_media: bool) -> tuple[str, tuple[tuple[str, ...], str] | None]:
    """The text of one message's content, and its media (urls, kind) if it has any."""
    param = f"messages[{index}].content"
    if isinstance(content, str):
        return _no_nul(content, param), None
    if not isinstance(content, list):
        raise ApiError(400, f"{param} must be a string or a list of content parts", param=param)
    texts, urls, kinds = [], [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise ApiError(400, f"{param}: a text part needs a string \"text\"", param=param)
            texts.append(_no_nul(part["text"], param))
        elif kind in MEDIA_PARTS:
            if not allow_media:
                raise ApiError(400, "a conversation is about one video or image, in the first user message; "
                                    f"{param} has another", param=param)
            urls.append(part.get(kind, {}).get("url") if isinstance(part.get(kind), dict) else None)
            kinds.append(MEDIA_PARTS[kind])
        else:
            raise ApiError(400, f"{param}: unsupported content part {kind!r}; use text, video_url or image_url",
                           param=param)
    return "\n".join(texts), _media(urls, kinds, param)


def _media(urls: list, kinds: list[str], param: str) -> tuple[tuple[str, ...], str] | None:
    """One message's media parts as (urls, kind): one video, one image, or one video's frames."""
    if not urls:
        return None
    if len(urls) == 1:
        return tuple(urls), kinds[0]
    if "video" in kinds:
        raise ApiError(400, "a conversation is about one video: one video_url part, or its frames as image_url "
                            f"parts; {param} has {len(urls)} parts with a video_url among them", param=param)
    if len(urls) > MAX_IMAGES:
        raise ApiError(400, f"{param} has {len(urls)} image_url parts, more than the {MAX_IMAGES} frames one video "
                            "may be sent as; send fewer (frames samples them when there are more)", param=param)
    return tuple(urls), "frames"


def _no_nul(text: str, param: str) -> str:
    if "\0" in text:
        raise ApiError(400, f"{param} contains a NUL character", param=param)
    return text


def _conversation(messages: Any) -> tuple[str | None, list[tuple[str, str]], str, tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    system_parts, turns, media = [], [], None
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            if turns:
                raise ApiError(400, "a system message must come before the conversation", param=f"messages[{i}]")
            system_parts.append(_text_of(message.get("content"), i, allow_media=False)[0])
            continue
        if role not in ("user", "assistant"):
            raise ApiError(400, f"messages[{i}].role must be system, user or assistant, got {role!r}",
                           param=f"messages[{i}].role")
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise ApiError(400, f"messages[{i}] should be a {expected} message: user and assistant turns alternate",
                           param=f"messages[{i}].role")
        text, found = _text_of(message.get("content"), i, allow_media=(role == "user" and media is None))
        media = media or found
        turns.append(text)
    if len(turns) % 2 == 0:
        raise ApiError(400, "the last message must be the user's question", param="messages")
    if media is None:
        raise ApiError(400, "the first user message needs a video_url (or image_url) content part", param="messages")
    question = turns[-1].strip()
    if not question:
        raise ApiError(400, "the question is empty; ask something about the video", param="messages")
    history = [(turns[j], turns[j + 1]) for j in range(0, len(turns) - 1, 2)]
    return ("\n".join(system_parts) if system_parts else None), history, question, media


def _stop(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOP:
        raise ApiError(400, f"stop must be a string or a list of up to {MAX_STOP} non-empty strings", param="stop")
    return tuple(stops)


def _unsupported(body: dict) -> None:
    for name, unused in UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and not any(value == u and isinstance(value, bool) == isinstance(u, bool) for u in unused):
            hint = " (one answer per request)" if name == "n" else ""
            raise ApiError(400, f"{name}={json.dumps(value)[:80]} is not supported by this server{hint}; "
                                f"leave {name} out", param=name)


def _flag(body: dict, name: str, param: str | None = None) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, f"{param or name} must be true or false, got {json.dumps(value)[:80]}", param=param or name)
    return bool(value)


def _streaming(body: dict) -> tuple[bool, bool]:
    """(stream, stream_options.include_usage), both real booleans."""
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object such as {\"include_usage\": true}",
                       param="stream_options")
    return _flag(body, "stream"), _flag(options or {}, "include_usage", "stream_options.include_usage")


def parse_request(body: Any) -> ChatRequest:
    """Check a chat-completions body; raises `ApiError(400)` naming the field at fault."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    _unsupported(body)
    system, history, question, (urls, kind) = _conversation(body.get("messages"))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    try:
        video, rate = _video_options(body, kind, len(urls))
        sampling = Sampling(
            max_tokens=_number({"max_tokens": max_tokens}, "max_tokens", int, DEFAULTS.max_new_tokens, 1),
            temperature=_number(body, "temperature", float, DEFAULTS.temperature, 0, 2),
            top_p=_number(body, "top_p", float, DEFAULTS.top_p, 1e-6, 1),
            seed=_number(body, "seed", int, None, 0, MAX_SEED), stop=_stop(body.get("stop")))
    except StanchatError as err:  # a combination the fields' own checks let through (e.g. end before start)
        raise client_error(err) from err
    stream, include_usage = _streaming(body)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, f"model must be a string, got {json.dumps(model)[:80]}", param="model")
    return ChatRequest(media_urls=urls, media_kind=kind, question=question, history=history, system=system,
                       video=video, frame_rate=rate, sampling=sampling, stream=stream, include_usage=include_usage,
                       model=model)


def _video_options(body: dict, kind: str, count: int) -> tuple[VideoOptions, float | None]:
    """The request's video options, and under "frames" the images' rate (their times i / rate; None:
    one a second): a frame list is sampled uniformly, `frames` of its `count` images."""
    temporal = body.get("temporal", DEFAULTS.temporal)
    if temporal not in TEMPORAL_MODES:
        raise ApiError(400, f"temporal must be one of {', '.join(TEMPORAL_MODES)}, got {temporal!r}", param="temporal")
    select = body.get("select", DEFAULTS.select)
    if select not in SELECT_MODES:
        raise ApiError(400, f"select must be one of {', '.join(SELECT_MODES)}, got {select!r}", param="select")
    video_io = _video_io(body)
    frames = _agreed(body, video_io, "frames", int, DEFAULTS.frames, 1)
    fps = _agreed(body, video_io, "fps", float, None, 1e-3)
    start, end = _number(body, "start", float, None, 0), _number(body, "end", float, None, 0)
    if kind == "frames" and (start is not None or end is not None):
        name = "start" if start is not None else "end"
        raise ApiError(400, f"{name} picks a window of a video file; of a video sent as its frames, send only the "
                            "frames you want", param=name)
    rate = fps if kind == "frames" else None
    if kind == "frames":
        frames, fps = min(frames, count), None  # the images' rate times them; they are sampled uniformly
    video = VideoOptions(frames=frames, temporal=temporal, strategy="fps" if fps is not None else DEFAULTS.strategy,
                         fps=fps, start=start, end=end,
                         segments=_number(body, "segments", int, DEFAULTS.segments, 1), select=select,
                         candidates=_number(body, "candidates", int, DEFAULTS.candidates, 1, MAX_CANDIDATES))
    return video, rate


def _video_io(body: dict) -> dict:
    """vLLM's `media_io_kwargs.video` (at the top level, or in an `extra_body` object a client sent as
    it is), checked to hold only keys stanchat does: {} when absent."""
    extra = body.get("extra_body")
    if extra is not None and not isinstance(extra, dict):
        raise ApiError(400, "extra_body must be an object", param="extra_body")
    given = [value for value in (body.get("media_io_kwargs"), (extra or {}).get("media_io_kwargs"))
             if value is not None]
    if len(given) == 2 and given[0] != given[1]:
        raise ApiError(400, "media_io_kwargs and extra_body.media_io_kwargs disagree; send one of them",
                       param="media_io_kwargs")
    kwargs = given[0] if given else {}
    if not isinstance(kwargs, dict) or not isinstance(kwargs.get("video", {}), dict):
        raise ApiError(400, "media_io_kwargs must be an object such as {\"video\": {\"num_frames\": 8}}",
                       param="media_io_kwargs")
    video = kwargs.get("video") or {}
    unknown = sorted(set(video) - set(VIDEO_IO))
    if unknown:
        raise ApiError(400, f"media_io_kwargs.video.{unknown[0]} is not supported by this server; it takes "
                            f"{' and '.join(VIDEO_IO)}", param=f"media_io_kwargs.video.{unknown[0]}")
    return video


def _agreed(body: dict, video_io: dict, name: str, kind: type, default: Any, low: float):
    """Field `name`, given as itself or as vLLM's media_io_kwargs.video key; both given, they must agree."""
    key = next(k for k, v in VIDEO_IO.items() if v == name)
    param = f"media_io_kwargs.video.{key}"
    ours = _number(body, name, kind, None, low)
    theirs = _number({param: video_io.get(key)}, param, kind, None, low)
    if ours is not None and theirs is not None and ours != theirs:
        raise ApiError(400, f"{name}={ours:g} and {param}={theirs:g} disagree; give one of them", param=name)
    value = ours if ours is not None else theirs
    return default if value is None else value


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int, video_tokens: int) -> dict:
    """OpenAI's usage object; the video's tokens (part of the prompt's) are counted on their own too."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens, "video_tokens": video_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "video_tokens": video_tokens}}


def completion(cid: str, model: str, text: str, finish_reason: str, usage_: dict, extra: dict) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason, "logprobs": None}],
            "usage": usage_, "stanchat": extra}


def chunk(cid: str, model: str, delta: dict, finish_reason: str | None = None, usage_: dict | None = None) -> dict:
    choices = [] if usage_ is not None else [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                              "logprobs": None}]
    body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": choices}
    if usage_ is not None:
        body["usage"] = usage_
    return body
