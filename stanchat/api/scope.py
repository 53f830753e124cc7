"""One request's hold on the server, and the bounded counts it is admitted by.

A request first holds a place among the bodies arriving (`Gate`, --max-receiving), bounded in time
by --body-timeout; only once its body has arrived and been checked does it take a place in the
server (`ChatService.admit`, --max-pending), so clients that send slowly cannot keep the others
out. Its blocking work (decode, generate) runs in the service's threads within the request's
`Uploads`. When the request ends (answered, refused, timed out, or its client gone) its decode
(`cancelled`, which `ChatService.prepare` hands to the decoder) and its engine job are cancelled;
its place and its uploaded files are given back once its threads have stopped, so a place is
never free while a thread still works for a request that is over.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Callable, TypeVar

from stanchat.api.errors import ApiError, ClientGone
from stanchat.api.uploads import Uploads, within

if TYPE_CHECKING:
    from starlette.requests import Request

    from stanchat.engine.base import Job
    from stanchat.api.service import ChatService

T = TypeVar("T")


class Gate:
    """A bounded count of requests in one state; used from the event loop only."""

    def __init__(self, limit: int, refusal: str):
        self.limit = limit
        self.refusal = refusal  # what a refused client is told
        self.count = 0

    def enter(self) -> None:
        if self.count >= self.limit:
            raise ApiError(429, self.refusal, code="server_busy")
        self.count += 1

    def leave(self) -> None:
        self.count -= 1


class RequestScope:
    """`admit`, `run` work, `cancel_on_end(job)`, and `end()` once, however the request ends."""

    def __init__(self, service: "ChatService", request: "Request", deadline: float):
        self.service = service
        self.request = request
        self.deadline = deadline  # event-loop time at which --request-timeout ends it
        self.uploads = Uploads()
        self._lock = threading.Lock()  # the fields below change in the loop and in the service's threads
        self._admitted = self._ended = self._released = False
        self._running = 0  # work submitted and not finished
        self._job: "Job | None" = None
        self.cancelled = threading.Event()  # set when the request ends: a decode still running for it stops

    def admit(self) -> None:
        """Take a place in the server (429 when it is full)."""
        self.service.admit()
        self._admitted = True

    def cancel_on_end(self, job: "Job") -> None:
        self._job = job

    async def run(self, work: Callable[..., T], *args) -> T:
        """`work(*args)` in the service's threads; ClientGone if the client hangs up first (the work
        goes on until it stops by itself or sees its job cancelled; `end` waits for it)."""
        with self._lock:
            self._running += 1
        try:
            future = self.service.pool.submit(within, self.uploads, work, *args)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._work_done(None)
            raise
        future.add_done_callback(self._work_done)
        result = asyncio.wrap_future(future)
        result.add_done_callback(_retrieve)  # an outcome nobody waits for any more is not an error to log
        gone = asyncio.ensure_future(_disconnected(self.request))
        try:
            done, _ = await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            future.cancel()  # only stops work that has not started
        if result in done:
            return result.result()
        raise ClientGone("while its answer was being prepared")

    def end(self) -> None:
        """The request is over: cancel its job; give its place and files back when its work has stopped."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            idle = self._running == 0
        self.cancelled.set()  # the decode worker is killed if it still works for this request
        if self._job is not None:
            self._job.cancelled.set()  # no-op once generation has finished
        if idle:
            self._release()

    def _work_done(self, future: Future | None) -> None:
        with self._lock:
            self._running -= 1
            idle = self._ended and self._running == 0
        if idle:
            self._release()

    def _release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self.uploads.remove()
        if self._admitted:
            self.service.release()


async def _disconnected(request: "Request") -> None:
    """Returns when the client has closed the connection (call once the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
