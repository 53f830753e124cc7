"""`ChatService`: a checked request -> an engine `Job` (media resolved, video encoded, prompt built).

It holds what one model process shares between all requests: the `VideoChat`, the engine, the
encoded-video cache, the media resolver, a bounded count of requests inside the server (admission
for 429) and the thread pool that runs the blocking parts.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from stanchat.api.config import ApiConfig
from stanchat.api.encoder import Encoded, VideoEncoder
from stanchat.api.engines.base import Engine, Job
from stanchat.api.errors import ApiError
from stanchat.api.media import MediaResolver
from stanchat.api.prompt import prompt_ids
from stanchat.api.protocol import ChatRequest
from stanchat.errors import StanchatError

if TYPE_CHECKING:
    from stanchat.chat import VideoChat

logger = logging.getLogger(__name__)


@dataclass
class Prepared:
    job: Job
    encoded: Encoded
    cache_hit: bool
    prompt_tokens: int  # the prompt with the video placeholder expanded
    video_tokens: int  # N


class ChatService:
    def __init__(self, chat: "VideoChat", engine: Engine, config: ApiConfig):
        self.chat = chat
        self.engine = engine
        self.config = config
        self.model_name = chat.name
        self._spool = tempfile.TemporaryDirectory(prefix="stanchat-api-")
        self.media = MediaResolver(self._spool.name, config.allowed_local_media_path)
        self.encoder = VideoEncoder(chat, config.cache_size, config.max_video_seconds, spool_owned=self._spool.name)
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
        """Resolve and encode the video (cached), build the prompt; blocking (run it in `pool`)."""
        media = self.media.resolve(request.media_url, request.media_kind, param="messages[0].content")
        ids = prompt_ids(self.chat.processor, request.history, request.question, request.system)
        encoded, hit = self.encoder.encode(media, request.video)
        video_tokens = int(encoded.features.shape[1])
        prompt_tokens = len(ids) - 1 + video_tokens
        try:
            self.chat.check_context(prompt_tokens, video_tokens, request.video.temporal, encoded.frames)
        except StanchatError as err:
            raise ApiError(400, str(err), param="messages") from err
        room = self.chat.context_length - prompt_tokens
        if room < 1:
            raise ApiError(400, f"the prompt fills the LLM's {self.chat.context_length}-token context; "
                                "send fewer turns or fewer frames", param="messages")
        sampling = replace(request.sampling, max_tokens=min(request.sampling.max_tokens, room))
        job = Job(prompt_ids=ids, features=encoded.features, sampling=sampling)
        return Prepared(job, encoded, hit, prompt_tokens, video_tokens)

    def health(self) -> dict:
        return {"status": "ok", "model": self.model_name, **self.engine.info(), "pending": self.pending,
                "max_pending": self.config.max_pending, "video_cache": self.encoder.stats()}

    def close(self) -> None:
        self.engine.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._spool.cleanup()
