"""`ChatService`: a checked request -> an engine `Job` (media resolved, video encoded, prompt built).

It holds what one model process shares between all requests: the `VideoChat` (its encoded-video
cache and its engine: the API answers through the same `VideoChat.encode` and engine as every
other front end), the media resolver, a bounded count of requests inside the server (admission
for 429) and the thread pool that runs the blocking parts. Library errors become 400s naming the
request field they are about.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from stanchat.api.config import ApiConfig
from stanchat.api.errors import ApiError
from stanchat.api.media import Media, MediaResolver
from stanchat.api.protocol import ChatRequest
from stanchat.engine.base import Engine, Job
from stanchat.engine.prompt import make_job
from stanchat.errors import StanchatError
from stanchat.options import DEFAULTS, VideoOptions

if TYPE_CHECKING:
    from stanchat.chat import VideoChat
    from stanchat.encoding import EncodedVideo

logger = logging.getLogger(__name__)

# a library error's parameter -> the request field a client sets
FIELDS = {"question": "messages", "messages": "messages", "max_new_tokens": "max_tokens"}


@dataclass
class Prepared:
    job: Job
    encoded: "EncodedVideo"
    prompt_tokens: int  # the prompt with the video placeholder expanded
    video_tokens: int  # N

    @property
    def cache_hit(self) -> bool:
        return self.encoded.cache_hit


class ChatService:
    def __init__(self, chat: "VideoChat", engine: Engine, config: ApiConfig):
        self.chat = chat
        chat.use_engine(engine)
        chat.cache.capacity = config.cache_size
        self.engine = engine
        self.config = config
        self.model_name = chat.name
        self._spool = tempfile.TemporaryDirectory(prefix="stanchat-api-")
        self.media = MediaResolver(self._spool.name, config.allowed_local_media_path)
        self.pool = ThreadPoolExecutor(max_workers=config.max_pending, thread_name_prefix="stanchat-api")
        self.pending = 0
        self._admission = threading.Lock()

    def admit(self) -> None:
        """Count a request in, or refuse it with 429 when `max_pending` are inside already."""
        with self._admission:
            if self.pending >= self.config.max_pending:
                raise ApiError(429, f"the server is busy ({self.pending} requests in progress, the most it "
                                    f"takes); retry shortly", code="server_busy")
            self.pending += 1

    def release(self) -> None:
        with self._admission:
            self.pending -= 1

    def prepare(self, request: ChatRequest) -> Prepared:
        """Resolve and encode the video (cached), build the job; blocking (run it in `pool`)."""
        media = self.media.resolve(request.media_url, request.media_kind, param="messages[0].content")
        try:
            self.chat.check_prompt(self._options(media, request), request.question, request.history, request.system)
            encoded = self._encode(media, request)
            job, prompt_tokens = make_job(self.chat.processor, self.chat.context_length, encoded.features,
                                          encoded.frames, encoded.options.temporal, request.history,
                                          request.question, request.sampling, request.system, encoded.spans)
        except StanchatError as err:
            param = FIELDS.get(err.param, err.param) if err.param else "messages"
            raise ApiError(400, self._public(str(err), media), param=param) from err
        finally:
            self._drop_spooled(media)
        return Prepared(job, encoded, prompt_tokens, encoded.video_tokens)

    @staticmethod
    def _options(media: Media, request: ChatRequest) -> VideoOptions:
        """The request's video options; an image is one frame (one window, nothing to select)."""
        if media.kind == "video":
            return request.video
        return replace(request.video, frames=1, strategy=DEFAULTS.strategy, fps=None, start=None, end=None,
                       segments=1, select=DEFAULTS.select)

    def _encode(self, media: Media, request: ChatRequest) -> "EncodedVideo":
        return self.chat.encode(media.path, self._options(media, request), question=request.question,
                                digest=media.sha256, max_seconds=self.config.max_video_seconds)

    def _public(self, message: str, media: Media) -> str:
        """`message` as a client may see it: the file called what the client called it, no server path."""
        return message.replace(media.path, media.label).replace(self._spool.name, "(upload folder)")

    def _drop_spooled(self, media: Media) -> None:
        if os.path.dirname(media.path) == self._spool.name:
            try:
                os.remove(media.path)
            except FileNotFoundError:
                pass

    def health(self) -> dict:
        return {"status": "ok", "model": self.model_name, **self.engine.info(), "pending": self.pending,
                "max_pending": self.config.max_pending, "video_cache": self.chat.cache.stats()}

    def close(self) -> None:
        self.engine.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._spool.cleanup()
