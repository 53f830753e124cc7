"""Connections whose request headers never finish arriving.

uvicorn closes a keep-alive connection that stays idle, but not one whose request headers are still
arriving: a client that sends a header line a minute (or opens a connection and sends nothing)
holds a connection and a file descriptor for as long as it likes, and a few thousand such clients
exhaust the server's descriptors before any request reaches `stanchat.api.scope`'s limits.
`with_header_deadline` gives every wait for a request's headers (a new connection's first, and
each next one on a kept-alive connection) --header-timeout seconds: a client that has started a
request by then gets a 408 and the connection is closed; one that has sent nothing is closed
quietly. Requests whose headers have arrived are not touched (the body and the request's life
have their own limits in the app).
"""

from __future__ import annotations

import json
import logging

logger = logging.getLogger(__name__)


def timeout_response(seconds: float) -> bytes:
    """The raw HTTP 408 (with the API's JSON error) sent to a client whose headers were late."""
    from stanchat.api.errors import ApiError

    body = json.dumps(ApiError(408, f"the request headers did not arrive within this server's {seconds:g} s limit "
                                    "(--header-timeout); send them in one go", code="header_timeout").body()).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % len(body)) + body


def with_header_deadline(seconds: float) -> type:
    """uvicorn's h11 protocol class, each wait for a request's headers limited to `seconds`
    (pass it as uvicorn's `http=`)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    response = timeout_response(seconds)

    class HeaderDeadline(H11Protocol):
        _header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._await_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._await_headers()  # a kept-alive connection waits for its next request's headers

        def connection_lost(self, exc) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _await_headers(self) -> None:
            self._stop_waiting()
            if not self.transport.is_closing():
                self._header_timer = self.loop.call_later(seconds, self._headers_late)

        def _stop_waiting(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
                return  # the headers arrived: the request is the app's now
            started = bool(self.conn.trailing_data[0])
            if started:
                logger.warning("a client's request headers did not arrive within --header-timeout (%g s); "
                               "answered 408 and closed", seconds)
                self.transport.write(response)
            self.transport.close()

    return HeaderDeadline
