"""The HTTP routes: `POST /v1/chat/completions` (JSON or server-sent events), `GET /v1/models`,
`GET /health`. Every error is an OpenAI-style JSON error object with its 4xx code and one line;
an unexpected failure is logged here and answered 500 without a traceback."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from stanchat.api.errors import ApiError
from stanchat.api.protocol import ChatRequest, chunk, completion, completion_id, parse_request, usage
from stanchat.api.service import ChatService, Prepared

logger = logging.getLogger(__name__)

CACHE_HEADER = "x-stanchat-video-cache"  # "hit" or "miss": did this request skip decoding and the tower?


def _error(err: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def _check_key(request: Request, key: str | None) -> None:
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, "missing API key: send it as the header 'Authorization: Bearer KEY'", code="invalid_api_key")
    if not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise ApiError(401, "incorrect API key", code="invalid_api_key")


async def _read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing (413) more than `limit` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request is {int(declared)} bytes, more than this server's {limit}-byte limit; "
                            "send a shorter video or a local path", code="request_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise ApiError(413, f"the request is more than this server's {limit}-byte limit", code="request_too_large")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON ({err})") from err


def create_app(service: ChatService) -> FastAPI:
    """The FastAPI app over a ready `ChatService`, kept in `app.state.service`: the routes below are
    module functions that read it from the request, not closures over it, because FastAPI keeps
    every endpoint it has classified in module-level caches; a closure would keep the service and
    its model alive after the app is dropped (benchmarks/serve.py lets one model go before vLLM)."""
    app = FastAPI(title="stanchat", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_api_route("/health", _health, methods=["GET"])
    app.add_api_route("/v1/models", _models, methods=["GET"])
    app.add_api_route("/v1/chat/completions", _chat_completions, methods=["POST"])
    return app


def _service(request: Request) -> ChatService:
    return request.app.state.service


async def _api_error(request: Request, err: ApiError) -> JSONResponse:
    return _error(err)


async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    return _error(ApiError(err.status_code, str(err.detail)))


async def _unexpected(request: Request, err: Exception) -> JSONResponse:
    logger.exception("request failed")
    return _error(ApiError(500, f"internal error ({type(err).__name__}); see the server's log"))


async def _health(request: Request) -> dict:
    return _service(request).health()


async def _models(request: Request) -> dict:
    service = _service(request)
    _check_key(request, service.config.api_key)
    return {"object": "list", "data": [{"id": service.model_name, "object": "model", "created": 0,
                                        "owned_by": "stanchat"}]}


async def _chat_completions(request: Request):
    service = _service(request)
    config = service.config
    _check_key(request, config.api_key)
    service.admit()  # before the body is read: a full server reads no more than the headers
    try:
        parsed = parse_request(await _read_json(request, config.max_request_bytes))
        if parsed.model not in (None, "", service.model_name):
            raise ApiError(404, f"model {parsed.model!r} is not served here; this server serves "
                                f"{service.model_name!r}", param="model", code="model_not_found")
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(service.pool, service.prepare, parsed)
        if parsed.stream:  # the response gives the place back when it ends
            stream = _sse(service, parsed, prepared)
            headers = {CACHE_HEADER: _hit(prepared)}
            return _ReleasingStream(stream, service.release, media_type="text/event-stream", headers=headers)
        result = await loop.run_in_executor(service.pool, service.engine.generate, prepared.job)
    except BaseException:
        service.release()
        raise
    service.release()
    body = completion(completion_id(), service.model_name, result.text, result.finish_reason,
                      usage(prepared.prompt_tokens, result.completion_tokens, prepared.video_tokens),
                      _extra(prepared))
    return JSONResponse(body, headers={CACHE_HEADER: _hit(prepared)})


class _ReleasingStream(StreamingResponse):
    """A streamed answer that gives its request's place back however the response ends: finished,
    failed, or the client gone before the first event (when the body's own `finally` never runs)."""

    def __init__(self, content: AsyncIterator[str], release, **kwargs: Any):
        super().__init__(content, **kwargs)
        self.release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # runs the body's cleanup if it started; no-op otherwise
            self.release()


def _hit(prepared: Prepared) -> str:
    return "hit" if prepared.cache_hit else "miss"


def _extra(prepared: Prepared) -> dict:
    """stanchat's own response fields: what the model saw of the video."""
    encoded = prepared.encoded
    extra = {"video_cache": _hit(prepared), "frames": encoded.frames,
             "timestamps": [float(t) for t in encoded.clip.timestamps], "video_tokens": prepared.video_tokens}
    if encoded.weights is not None:  # select=question: each used frame's weight for the question
        extra["weights"] = list(encoded.weights)
    if encoded.spans is not None:  # temporal segments: each window's [start, end] seconds
        extra["spans"] = [list(span) for span in encoded.spans]
    return extra


def _event(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


async def _sse(service: ChatService, parsed: ChatRequest, prepared: Prepared) -> AsyncIterator[str]:
    """The answer as chat.completion.chunk events; generation stops if the client goes away."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    job = prepared.job
    job.on_text = lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece)
    cid, model = completion_id(), service.model_name
    started = time.perf_counter()
    future = loop.run_in_executor(service.pool, service.engine.generate, job)
    future.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
    try:
        yield _event(chunk(cid, model, {"role": "assistant", "content": ""}))
        while (piece := await pieces.get()) is not None:
            yield _event(chunk(cid, model, {"content": piece}))
        try:
            result = future.result()
        except ApiError as err:
            yield _event(err.body())
            return
        except Exception as err:  # headers are sent: the error travels as an event
            logger.exception("streamed generation failed")
            yield _event(ApiError(500, f"internal error ({type(err).__name__}); see the server's log").body())
            return
        yield _event(chunk(cid, model, {}, finish_reason=result.finish_reason))
        if parsed.include_usage:
            yield _event(chunk(cid, model, {}, usage_=usage(prepared.prompt_tokens, result.completion_tokens,
                                                            prepared.video_tokens)))
        yield _event("[DONE]")
        logger.debug("streamed %d tokens in %.3f s", result.completion_tokens, time.perf_counter() - started)
    finally:
        job.cancelled.set()  # no-op once finished; stops generation when the client left early
        if not future.done():
            await asyncio.wait([future])
