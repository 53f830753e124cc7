"""What the API server does with a video before the model: the duration cap and the file's name in errors."""

import tempfile
from pathlib import Path

import pytest

from stanchat.api.errors import ApiError
from stanchat.api.media import MediaResolver
from stanchat.errors import StanchatError, VideoError
from stanchat.video import BACKENDS, load_video
from tests.api_helpers import LEFT, data_url

LEFT_SECONDS = 3.0  # examples/blue-triangle-left.mp4: 24 frames at 8 fps


class _Watched:
    """PyAV, counting the frames it is asked to decode."""

    name = "watched"

    def __init__(self):
        self.calls = 0

    def decode(self, info, indices, size, tick, transform):
        self.calls += 1
        return BACKENDS["pyav"].decode(info, indices, size, tick, transform)


def test_the_length_cap_is_checked_on_the_window_before_decoding():
    watched = _Watched()  # timeout=None: decoded in this process, so the count is seen here
    with pytest.raises(VideoError, match=f"is {LEFT_SECONDS:.1f} s long, more than the 0.5 s limit.*start/end"):
        load_video(LEFT, frames=4, max_seconds=0.5, backend=[watched], timeout=None)
    with pytest.raises(VideoError, match="window sampled .* is 1.5 s long"):
        load_video(LEFT, frames=4, start=0.5, end=2.0, max_seconds=0.5, backend=[watched], timeout=None)
    assert watched.calls == 0
    clip = load_video(LEFT, frames=4, start=1.0, end=1.5, max_seconds=0.5, backend=[watched], timeout=None)
    assert watched.calls == 1 and clip.duration == LEFT_SECONDS
    assert 1.0 <= min(clip.timestamps) < max(clip.timestamps) < 1.5
    with pytest.raises(StanchatError, match="max_seconds must be > 0"):
        load_video(LEFT, frames=4, max_seconds=0)


@pytest.fixture(scope="module")
def chat():
    from stanchat.chat import load

    return load("tiny", device="cpu")


def _encode_error(chat, url: str, fields: dict | None = None, max_seconds: float = 600.0) -> ApiError:
    """The 400 `ChatService.prepare` answers for a request about `url` (with body `fields`)."""
    from stanchat.api.config import ApiConfig
    from stanchat.api.protocol import parse_request
    from stanchat.api.service import ChatService

    service = ChatService(chat, chat.engine, ApiConfig(max_video_seconds=max_seconds))
    content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "What happens?"}]
    try:
        with pytest.raises(ApiError) as err:
            service.prepare(parse_request({"messages": [{"role": "user", "content": content}], **(fields or {})}))
    finally:
        service.pool.shutdown()
        service._spool.cleanup()
    assert err.value.status == 400 and service._spool.name not in err.value.message
    assert tempfile.gettempdir() not in err.value.message
    return err.value


def test_errors_never_show_the_servers_spool_path(chat):
    text = _encode_error(chat, "data:text/plain;base64,aGVsbG8gd29ybGQ=")
    assert text.message == "the uploaded video is a text file, not a video"
    long = _encode_error(chat, data_url(LEFT), max_seconds=0.5)
    assert long.message.startswith("the uploaded video is 3.0 s long")
    window = _encode_error(chat, data_url(LEFT), {"start": 0.5, "end": 2.0}, max_seconds=0.5)
    assert window.message.startswith("the window sampled from the uploaded video is 1.5 s long")
