"""`ChatService`: a checked request -> an engine `Job` (media resolved, video encoded, prompt built).

It holds what one model process shares between all requests: the `VideoChat` (its encoded-video
cache and its engine: the API answers through the same `VideoChat.encode` and engine as every
other front end), the media resolver, a bounded count of requests inside the server (admission
for 429) and the thread pool that runs the blocking parts. Library errors become 400s naming the
request field they are about.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from stanchat.api.config import ApiConfig
from stanchat.api.errors import ApiError, client_error
from stanchat.api.media import Media, MediaResolver
from stanchat.api.protocol import ChatRequest
from stanchat.api.remote import RemotePolicy
from stanchat.api.uploads import SPOOL_PREFIX
from stanchat.engine.base import Engine, Job
from stanchat.engine.prompt import make_job
from stanchat.errors import ResourceError, StanchatError
from stanchat.options import DEFAULTS, VideoOptions

if TYPE_CHECKING:
    from stanchat.chat import VideoChat
    from stanchat.encoding import EncodedVideo
    from stanchat.video import SampledFrames

logger = logging.getLogger(__name__)

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
        self._spool = tempfile.TemporaryDirectory(prefix=SPOOL_PREFIX)
        remote = None if config.allowed_media_domains is None else RemotePolicy(
            frozenset(config.allowed_media_domains), config.media_fetch_timeout, config.max_media_bytes)
        self.media = MediaResolver(self._spool.name, config.allowed_local_media_path, remote)
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

    def check(self, request: ChatRequest) -> None:
        """Every check that needs no file, before anything is written: the conversation through the
        model's chat template, the frame count, the prompt against the context (400 naming the field)."""
        try:
            self.chat.check_prompt(self._options(request.media_kind, request), request.question, request.history,
                                   request.system)
        except StanchatError as err:
            raise self._client_error(err) from err

    def prepare(self, request: ChatRequest, cancel: threading.Event | None = None) -> Prepared:
        """Resolve and encode the video (cached), build the job; blocking (run it in `pool`).
        The request's uploaded file belongs to its scope (`stanchat.api.scope`), which deletes it and
        sets `cancel` when the request ends: a decode still running is then called off
        (`stanchat.errors.Cancelled`, which no client reads)."""
        param = "messages[0].content"
        media = None
        try:
            if request.media_kind == "frames":
                video, digest = self._frames(request, cancel, param), None
            else:
                media = self.media.resolve(request.media_url, request.media_kind, param, cancel)
                video, digest = media.path, media.sha256
            encoded = self.chat.encode(video, self._options(request.media_kind, request), question=request.question,
                                       digest=digest, max_seconds=self.config.max_video_seconds,
                                       max_pixels=self.config.max_frame_pixels, cancel=cancel)
            job, prompt_tokens = make_job(self.chat.processor, self.chat.context_length, encoded.features,
                                          encoded.frames, encoded.options.temporal, request.history,
                                          request.question, request.sampling, request.system, encoded.spans)
        except ResourceError:  # the server's fault (a decode worker killed): a 5xx, `stanchat.api.faults`
            raise
        except StanchatError as err:
            raise self._client_error(err, media) from err
        return Prepared(job, encoded, prompt_tokens, encoded.video_tokens)

    def _frames(self, request: ChatRequest, cancel: threading.Event | None, param: str) -> "SampledFrames":
        """A video sent as its frames (image_url parts): the images `frames` samples (all of them for
        select=question, which chooses among them), each resolved, checked against --max-frame-pixels
        and fitted to the tower as it is decoded, in order, timed by the request's rate."""
        from stanchat.video.stills import load_stills, pick_uniform

        urls = request.media_urls
        picks = list(range(len(urls))) if request.video.select == "question" else \
            pick_uniform(len(urls), request.video.frames)
        media = [self.media.resolve(urls[i], "image", param, cancel) for i in picks]
        labels = [f"image {i + 1} of {len(urls)}" + ("" if m.label.startswith("the uploaded") else f" ({m.label})")
                  for i, m in zip(picks, media)]
        return load_stills([m.path for m in media], picks, len(urls), request.frame_rate,
                           fit=self.chat.preprocessor.fit, max_pixels=self.config.max_frame_pixels, cancel=cancel,
                           labels=labels)

    @staticmethod
    def _options(kind: str, request: ChatRequest) -> VideoOptions:
        """The request's video options; an image is one frame (one window, nothing to select); a
        video's frames were sampled by the request (`protocol`), as many as it uses."""
        if kind in ("video", "frames"):
            return request.video
        return replace(request.video, frames=1, strategy=DEFAULTS.strategy, fps=None, start=None, end=None,
                       segments=1, select=DEFAULTS.select)

    def _client_error(self, err: StanchatError, media: Media | None = None) -> ApiError:
        """A library error as the 400 a client reads (`client_error`), with no server path in it."""
        error = client_error(err)
        message = error.message.replace(media.path, media.label) if media else error.message
        error.message = message.replace(self._spool.name, "(upload folder)")
        return error

    def health(self) -> dict:
        return {"status": "ok", "model": self.model_name, **self.engine.info(), "pending": self.pending,
                "max_pending": self.config.max_pending, "video_cache": self.chat.cache.stats()}

    def close(self) -> None:
        if self.chat._engine is self.engine:
            self.chat.use_engine(None)  # closes it; the chat answers through a fresh default engine after
        self.engine.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._spool.cleanup()
