"""Fetching an http(s) media URL for a request, from the hosts the operator allowed and nothing else.

Off unless the server was started with `--allowed-media-domains HOST ...` (vLLM's flag). Then:
- a URL's host must be one of those names exactly (no subdomains, no wildcards); so must every
  redirect's, each checked as the first URL was (at most MAX_REDIRECTS);
- the host's addresses are resolved here and checked: one that is not a global unicast address
  (loopback, private, shared, link-local, multicast, reserved, unspecified) is refused unless that address itself is listed (so
  allowing 127.0.0.1 lets a test fetch from loopback and nothing else in); the connection goes to
  the address that was checked (DNS rebinding cannot swap in another between check and connect),
  with the URL's host in the Host header and as the TLS server name (certificates are verified);
- the fetch has `timeout` seconds from its start: every wait for the remote (connecting, the status
  and headers, each read of the body) is given only the time left, so a remote that stalls is cut at
  the deadline (one that trickles bytes can stretch a wait by at most one read's worth; the DNS
  lookup is the resolver's own); the body holds at most `max_bytes` bytes, enforced while it
  streams to the request's file (a Content-Length over the cap is refused unread).
Every refusal is an `ApiError(400)` naming the request field: the URL is the client's input, and a
remote that is slow, too big or unreachable is no failure of this server (so not a 5xx).
Standard library only (http.client, ssl, socket).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

from stanchat.api.errors import ApiError
from stanchat.errors import Cancelled

MAX_REDIRECTS = 5
CHUNK = 1 << 16  # bytes read at a time
REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class RemotePolicy:
    hosts: frozenset[str]  # host names and IP addresses, lower case, exactly as URLs must name them
    timeout: float  # seconds from the fetch's start (connecting, redirects, headers, the body)
    max_bytes: int  # largest body accepted


@dataclass(frozen=True)
class Fetched:
    sha256: str  # of the bytes written
    size: int
    content_type: str  # the response's media type, lower case, without parameters ("" when absent)
    url: str  # the URL finally fetched (after redirects)


def fetch(url: str, policy: RemotePolicy, sink: BinaryIO, param: str,
          cancel: threading.Event | None = None) -> Fetched:
    """Stream `url` into `sink` under `policy`; ApiError(400, param=param) when it is refused or fails."""
    deadline = time.monotonic() + policy.timeout
    try:
        for _ in range(MAX_REDIRECTS + 1):
            response, connection = _open(url, policy, deadline, param)
            try:
                if response.status in REDIRECTS and response.getheader("location"):
                    url = urljoin(url, response.getheader("location"))
                    continue
                if response.status != 200:
                    raise ApiError(400, f"{param}: fetching {_shown(url)} answered HTTP {response.status}",
                                   param=param)
                return _stream(response, connection, url, policy, deadline, sink, param, cancel)
            finally:
                response.close()
                connection.close()
    except (TimeoutError, socket.timeout) as err:
        raise ApiError(400, f"{param}: {_shown(url)} did not arrive within {policy.timeout:g} s "
                            "(the server's --media-fetch-timeout)", param=param) from err
    except (OSError, http.client.HTTPException) as err:
        raise ApiError(400, f"{param}: could not fetch {_shown(url)} ({type(err).__name__}: {err})",
                       param=param) from err
    raise ApiError(400, f"{param}: {_shown(url)} redirected more than {MAX_REDIRECTS} times", param=param)


def _open(url: str, policy: RemotePolicy, deadline: float, param: str):
    """(response, connection) of a GET of `url`, its host and address checked first."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, f"{param}: {_shown(url)} is not an http(s) URL with a host", param=param)
    if parts.username is not None or parts.password is not None:
        raise ApiError(400, f"{param}: a media URL may not carry credentials", param=param)
    host = parts.hostname.lower()
    if host not in policy.hosts:
        raise ApiError(400, f"{param}: {host} is not among the hosts this server fetches from "
                            "(--allowed-media-domains)", param=param)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise ApiError(400, f"{param}: {_shown(url)} has a bad port", param=param) from err
    address = _checked_address(host, port, policy, param)
    connection = _Pinned(host, port, address, _left(deadline), parts.scheme == "https")
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", path, headers={"User-Agent": "stanchat", "Accept-Encoding": "identity"})
        connection.pinned.settimeout(_left(deadline))  # the status and headers get only the time left
        return connection.getresponse(), connection
    except BaseException:
        connection.close()
        raise


def _checked_address(host: str, port: int, policy: RemotePolicy, param: str) -> str:
    """An address of `host` this server may connect to (public, or listed itself)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ApiError(400, f"{param}: cannot resolve {host} ({err.strerror})", param=param) from err
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if not _internal(address) or str(address) in policy.hosts:
            return str(address)
    raise ApiError(400, f"{param}: {host} resolves to an internal address ({sockaddr[0]}), which this server "
                        "fetches from only when that address itself is in --allowed-media-domains", param=param)


def _internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.0.0.1 is 10.0.0.1
    if mapped is not None:
        address = mapped
    # not global: loopback, private, link-local, shared (100.64.0.0/10, carrier NAT and some clouds'
    # metadata services), reserved, unspecified, ...; multicast counts as global to ipaddress
    return not address.is_global or address.is_multicast


class _Pinned(http.client.HTTPConnection):
    """An HTTP(S) connection to a checked address, speaking to `host` (Host header, TLS name)."""

    def __init__(self, host: str, port: int, address: str, timeout: float, tls: bool):
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.tls = tls
        self.pinned: socket.socket | None = None  # kept: http.client drops `sock` once a response owns it

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host) if self.tls else sock
        self.pinned = self.sock


def _stream(response: http.client.HTTPResponse, connection: _Pinned, url: str, policy: RemotePolicy,
            deadline: float, sink: BinaryIO, param: str, cancel: threading.Event | None) -> Fetched:
    too_big = f"{param}: {_shown(url)} is larger than the {policy.max_bytes:,} bytes this server fetches " \
              "(--max-media-bytes)"
    length = response.getheader("content-length")
    if length is not None and length.strip().isdigit() and int(length) > policy.max_bytes:
        raise ApiError(400, too_big, param=param)
    digest, size = hashlib.sha256(), 0
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled("the fetch was cancelled")
        connection.pinned.settimeout(_left(deadline))  # the whole fetch's time, not each read's
        block = response.read1(CHUNK)
        if not block:
            break
        size += len(block)
        if size > policy.max_bytes:
            raise ApiError(400, too_big, param=param)
        digest.update(block)
        sink.write(block)
    if size == 0:
        raise ApiError(400, f"{param}: {_shown(url)} holds no bytes", param=param)
    kind = (response.getheader("content-type") or "").partition(";")[0].strip().lower()
    return Fetched(digest.hexdigest(), size, kind, url)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the fetch ran out of time")
    return left


def _shown(url: str, limit: int = 200) -> str:
    return url if len(url) <= limit else url[: limit - 3] + "..."
