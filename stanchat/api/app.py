"""The HTTP routes: `POST /v1/chat/completions` (JSON or server-sent events), `GET /v1/models`,
`GET /health`. Every error is an OpenAI-style JSON error object with one line: 4xx naming the
client's mistake, 5xx for the server's own failures (`stanchat.api.faults` decides which).

A chat request's life (`stanchat.api.scope`): its body arrives within --body-timeout among at most
--max-receiving others; it is parsed and checked (the conversation included) before anything is
written to disk; only then does it take one of --max-pending places; it ends within
--request-timeout. A client that hangs up is logged in one line and its decode and generation are
cancelled.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from stanchat.api.body import parse_json, read_body
from stanchat.api.errors import ApiError, ClientGone
from stanchat.api.faults import public
from stanchat.api.protocol import ChatRequest, chunk, completion, completion_id, parse_request, usage
from stanchat.api.scope import Gate, RequestScope
from stanchat.api.service import ChatService, Prepared

logger = logging.getLogger(__name__)

CACHE_HEADER = "x-stanchat-video-cache"  # "hit" or "miss": did this request skip decoding and the tower?
STREAM_GRACE = 5.0  # seconds past --request-timeout a stream gets to send its closing error event


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


def create_app(service: ChatService) -> FastAPI:
    """The FastAPI app over a ready `ChatService`, kept in `app.state.service`: the routes below are
    module functions that read it from the request, not closures over it, because FastAPI keeps
    every endpoint it has classified in module-level caches; a closure would keep the service and
    its model alive after the app is dropped (benchmarks/serve.py lets one model go before vLLM)."""
    app = FastAPI(title="stanchat", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.state.receiving = Gate(service.config.max_receiving, "the server is receiving as many request bodies as "
                                                             "it takes at once; retry shortly")
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
    return _error(public(err))


async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    return _error(ApiError(err.status_code, str(err.detail)))


async def _unexpected(request: Request, err: Exception) -> JSONResponse:
    return _error(public(err))


async def _health(request: Request) -> dict:
    """{"status": "ok"}; with the key (or when the server has none), also the counters."""
    service = _service(request)
    try:
        _check_key(request, service.config.api_key)
    except ApiError:
        return {"status": "ok"}
    return {**service.health(), "receiving": request.app.state.receiving.count,
            "max_receiving": request.app.state.receiving.limit}


async def _models(request: Request) -> dict:
    service = _service(request)
    _check_key(request, service.config.api_key)
    return {"object": "list", "data": [{"id": service.model_name, "object": "model", "created": 0,
                                        "owned_by": "stanchat"}]}


async def _chat_completions(request: Request) -> Response:
    """The request's whole life, bounded by --request-timeout; its scope ends here unless a stream
    carries it on (the stream ends it)."""
    service = _service(request)
    _check_key(request, service.config.api_key)
    loop = asyncio.get_running_loop()
    scope = RequestScope(service, request, loop.time() + service.config.request_timeout)
    streamed = False
    try:
        async with asyncio.timeout_at(scope.deadline) as limit:
            response = await _answer(request, service, scope)
        streamed = isinstance(response, _ScopedStream)
        return response
    except TimeoutError as err:
        if not limit.expired():
            raise public(err) from None
        logger.warning("a request ran past --request-timeout (%g s) and was ended", service.config.request_timeout)
        raise ApiError(503, f"the request took longer than this server's {service.config.request_timeout:g} s "
                            "limit (--request-timeout)", code="timeout") from None
    except ClientGone as gone:
        logger.info("a client hung up %s", gone)
        return Response(status_code=499)  # nobody reads it
    except Exception as err:  # answered here: the handler of last resort would also re-raise it into the log
        raise public(err) from None
    finally:
        if not streamed:
            scope.end()


async def _answer(request: Request, service: ChatService, scope: RequestScope) -> Response:
    config, receiving = service.config, request.app.state.receiving
    receiving.enter()
    try:
        body = await read_body(request, config.max_request_bytes, config.body_timeout)
        parsed = await asyncio.get_running_loop().run_in_executor(None, _checked, service, body)
        scope.admit()  # only now, the body arrived and checked, does the request hold a place
    finally:
        receiving.leave()
    prepared = await scope.run(service.prepare, parsed, scope.cancelled)
    scope.cancel_on_end(prepared.job)
    headers = {CACHE_HEADER: _hit(prepared)}
    if parsed.stream:
        return _ScopedStream(_sse(service, parsed, prepared, scope.deadline), scope,
                             media_type="text/event-stream", headers=headers)
    result = await scope.run(service.engine.generate, prepared.job)
    body = completion(completion_id(), service.model_name, result.text, result.finish_reason,
                      usage(prepared.prompt_tokens, result.completion_tokens, prepared.video_tokens),
                      _extra(prepared))
    return JSONResponse(body, headers=headers)


def _checked(service: ChatService, body: bytes) -> ChatRequest:
    """The parsed request, with every check that needs no file done (the conversation through the
    model's chat template included), so that nothing of a request refused here reaches the disk."""
    parsed = parse_request(parse_json(body))
    if parsed.model not in (None, "", service.model_name):
        raise ApiError(404, f"model {parsed.model!r} is not served here; this server serves "
                            f"{service.model_name!r}", param="model", code="model_not_found")
    service.check(parsed)
    return parsed


class _ScopedStream(StreamingResponse):
    """A streamed answer that ends its request's scope however the response ends: finished, failed,
    past --request-timeout (a client that stops reading), or the client gone (also before the
    first event, when the body's own `finally` never runs)."""

    def __init__(self, content: AsyncIterator[str], scope: RequestScope, **kwargs: Any):
        super().__init__(content, **kwargs)
        self.scope = scope
        self.finished = False  # the last body message was sent

    async def __call__(self, scope, receive, send) -> None:
        async def tracked(message: dict) -> None:
            await send(message)
            self.finished = message["type"] == "http.response.body" and not message.get("more_body", False)

        try:
            async with asyncio.timeout_at(self.scope.deadline + STREAM_GRACE):
                await super().__call__(scope, receive, tracked)
        except TimeoutError:
            logger.warning("a streamed answer ran past --request-timeout (its client stopped reading); ended")
        except (ClientDisconnect, OSError):
            pass
        finally:
            await self.body_iterator.aclose()  # runs the body's cleanup if it started; no-op otherwise
            self.scope.end()
        if not self.finished:
            logger.info("a client hung up during its streamed answer; generation cancelled")


def _hit(prepared: Prepared) -> str:
    return "hit" if prepared.cache_hit else "miss"


def _extra(prepared: Prepared) -> dict:
    """stanchat's own response fields: what the model saw of the video (`indices`: each used frame's
    number in the video, or, of a video sent as images, its image's place in the list, from 0)."""
    encoded = prepared.encoded
    extra = {"video_cache": _hit(prepared), "frames": encoded.frames, "indices": list(encoded.clip.indices),
             "timestamps": [float(t) for t in encoded.clip.timestamps], "video_tokens": prepared.video_tokens}
    if encoded.weights is not None:  # select=question: each used frame's weight for the question
        extra["weights"] = list(encoded.weights)
    if encoded.spans is not None:  # temporal segments: each window's [start, end] seconds
        extra["spans"] = [list(span) for span in encoded.spans]
    return extra


def _event(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


async def _sse(service: ChatService, parsed: ChatRequest, prepared: Prepared, deadline: float) -> AsyncIterator[str]:
    """The answer as chat.completion.chunk events, ending with an error event at `deadline`; the
    last chunk carries stanchat's record of the video (frames, timestamps), as a plain answer does."""
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
        while (piece := await asyncio.wait_for(pieces.get(), max(0.0, deadline - loop.time()))) is not None:
            yield _event(chunk(cid, model, {"content": piece}))
        try:
            result = future.result()
        except Exception as err:  # headers are sent: the error travels as an event
            yield _event(public(err).body())
            return
        last = chunk(cid, model, {}, finish_reason=result.finish_reason)
        yield _event({**last, "stanchat": _extra(prepared)})
        if parsed.include_usage:
            yield _event(chunk(cid, model, {}, usage_=usage(prepared.prompt_tokens, result.completion_tokens,
                                                            prepared.video_tokens)))
        yield _event("[DONE]")
        logger.debug("streamed %d tokens in %.3f s", result.completion_tokens, time.perf_counter() - started)
    except TimeoutError:
        logger.warning("a streamed answer ran past --request-timeout and was ended")
        yield _event(ApiError(503, "the answer took longer than this server's limit (--request-timeout)",
                              code="timeout").body())
    finally:
        job.cancelled.set()  # no-op once finished; stops generation when the client left early
        if not future.done():
            await asyncio.wait([future])
