"""Whose fault an exception is, decided in one place: what the client is told and what the log says.

- `ApiError`: the status it carries (a 4xx names the client's mistake), unless it wraps one of the
  server's own failures (the encoder words every StanchatError as a 400 about the video).
- The server's own failures, 503 with one line and one log line: a decode worker killed from
  outside (`stanchat.errors.ResourceError`, what the out-of-memory killer causes), memory exhausted
  (MemoryError, torch's OutOfMemoryError), an engine that has died (vLLM's EngineDeadError).
- Any other exception is a bug: 500 naming its class; the log gets its traceback.
"""

from __future__ import annotations

import logging

from stanchat.api.errors import ApiError
from stanchat.errors import ResourceError, StanchatError

logger = logging.getLogger(__name__)

# exception classes of libraries imported only where they are used (torch, vLLM), by class name
OUT_OF_MEMORY = ("OutOfMemoryError",)  # torch.OutOfMemoryError (torch.cuda.OutOfMemoryError)
ENGINE_DEAD = ("EngineDeadError",)  # vLLM: its engine process has died


def public(err: BaseException) -> ApiError:
    """The error the client is sent for `err`; server faults and bugs are logged here, once."""
    fault = _server_fault(err)
    if fault is not None:
        logger.error("request failed: %s", fault.message)
        return fault
    if isinstance(err, ApiError):
        return err
    if isinstance(err, StanchatError):  # a user's error that reached the server unworded
        return ApiError(400, _one_line(str(err)))
    logger.error("request failed", exc_info=err)
    return ApiError(500, f"internal error ({type(err).__name__}); see the server's log", code="internal_error")


def _server_fault(err: BaseException) -> ApiError | None:
    cause = err.__cause__ if isinstance(err, ApiError) else err
    names = {kind.__name__ for kind in type(cause).__mro__}
    if isinstance(cause, ResourceError):
        said = err.message if isinstance(err, ApiError) else str(cause)  # the encoder's words hide server paths
        return ApiError(503, f"the server failed this request: {_one_line(said)}", code="server_fault")
    if isinstance(cause, MemoryError) or names & set(OUT_OF_MEMORY):
        return ApiError(503, "the server ran out of memory for this request; retry later, or send fewer "
                             "frames or a smaller video", code="out_of_memory")
    if names & set(ENGINE_DEAD):
        return ApiError(503, "the server's model engine has stopped; the server must be restarted",
                        code="engine_dead")
    return None


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
