"""A request body, read within a size and a time limit, and parsed as JSON within a nesting limit.

Python's `json` recurses once per nesting level: a body of 100,000 `[` raises RecursionError (a
server fault, were it not caught), and a body of millions of empty arrays takes gigabytes once
parsed. So the body's structure is measured before it is parsed: string contents are cut out (a
regular expression, C speed: ~0.3 s for 60 MB of base64), then the brackets left are counted and
their depth followed, refusing with a 400 what no chat request needs.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.requests import ClientDisconnect, Request

from stanchat.api.errors import ApiError, ClientGone

MAX_DEPTH = 64  # JSON nesting a request may have (a chat request has 6)
MAX_CONTAINERS = 100_000  # JSON objects and arrays a request may hold (a long conversation has a few thousand)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string; `"` and `\` never occur inside UTF-8 sequences
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refusing (413) more than `limit` bytes before reading them all and (408) a body
    that has not fully arrived `timeout` seconds after the request's headers; ClientGone if the
    client hangs up first."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request is {int(declared)} bytes, more than this server's {limit}-byte limit; "
                            "send a shorter video or a local path", code="request_too_large")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for part in request.stream():
                body += part
                if len(body) > limit:
                    raise ApiError(413, f"the request is more than this server's {limit}-byte limit",
                                   code="request_too_large")
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within this server's {timeout:g} s limit "
                            "(--body-timeout); send it in one go", code="body_timeout") from None
    except ClientDisconnect:
        raise ClientGone(f"while sending its body ({len(body)} bytes in)") from None
    return bytes(body)


def parse_json(body: bytes) -> Any:
    """The body as JSON; a 400 naming the problem for invalid JSON or more nesting or containers
    than MAX_DEPTH / MAX_CONTAINERS. NaN and infinities parse as floats: the fields' checks refuse
    them by name (`stanchat.api.protocol`)."""
    structure = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)  # only the brackets outside strings
    depth = 0
    for bracket in structure[: 2 * MAX_CONTAINERS + 1]:  # bounded work, whatever the body
        depth += 1 if bracket in b"[{" else -1
        if depth > MAX_DEPTH:
            raise ApiError(400, f"the request body is nested more than {MAX_DEPTH} levels deep")
    if len(structure) > 2 * MAX_CONTAINERS:
        raise ApiError(400, f"the request body holds more than {MAX_CONTAINERS} JSON objects and arrays")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ApiError(400, f"the request body is not valid JSON ({_first_line(err)})") from None


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__
