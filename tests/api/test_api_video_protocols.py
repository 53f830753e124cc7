"""The ways clients send a video to `stanchat api`: its frames as an ordered list of image_url parts,
vLLM's `media_io_kwargs`, and http(s) URLs fetched only from allowed hosts (a loopback server here)."""

import base64
import contextlib
import http.server
import io
import threading
from pathlib import Path

import openai
import pytest
import torch

from stanchat.api.config import ApiConfig
from stanchat.options import VideoOptions
from tests import api_checks as checks
from tests.api_helpers import KEY, LEFT, QUESTION, data_url, free_port, serve_in_thread, video_message

FRAMES = 8  # not the default 16: the count must reach the model
FETCH_TIMEOUT = 2.0  # the media server's --media-fetch-timeout; the slow route holds its body until released
MAX_MEDIA_BYTES = 20_000  # LEFT is 10,277 bytes


@pytest.fixture(scope="module")
def chat():
    from stanchat.chat import load

    return load("tiny", device="cpu")


def _build(chat, **config):
    from stanchat.api.server import build

    return build(chat, ApiConfig(api_key=KEY, **config))


@pytest.fixture(scope="module")
def server(chat):
    """Fetches from 127.0.0.1 and from no other host."""
    with serve_in_thread(_build(chat, allowed_media_domains=["127.0.0.1"],
                                media_fetch_timeout=FETCH_TIMEOUT, max_media_bytes=MAX_MEDIA_BYTES)) as base:
        yield base


@pytest.fixture(scope="module")
def pngs():
    """LEFT's FRAMES uniform frames at their display size, as PNG data URLs (lossless: the same pixels)."""
    from PIL import Image

    from stanchat.video import load_video

    clip = load_video(LEFT, frames=FRAMES, fit=None)
    urls = []
    for frame in clip.frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        urls.append(f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}")
    return urls


def _frames_message(urls: list[str], question: str = QUESTION) -> dict:
    return {"role": "user", "content": [*({"type": "image_url", "image_url": {"url": u}} for u in urls),
                                        {"type": "text", "text": question}]}


def _record(answer) -> dict:
    return answer.model_extra["stanchat"]


def test_a_frame_list_equals_the_same_frames_sent_as_a_video_file(server, chat, pngs):
    _, as_video = checks.ask(server, [video_message(data_url(LEFT))], extra_body={"frames": FRAMES})
    _, as_frames = checks.ask(server, [_frames_message(pngs)])
    assert as_frames.choices[0].message.content == as_video.choices[0].message.content
    assert as_frames.usage.video_tokens == as_video.usage.video_tokens
    assert as_frames.usage.prompt_tokens == as_video.usage.prompt_tokens
    record = _record(as_frames)
    assert record["frames"] == FRAMES and record["indices"] == list(range(FRAMES))
    assert record["timestamps"] == [float(i) for i in range(FRAMES)]  # no fps given: one image a second
    streamed = checks.client(server).chat.completions.create(model="tiny", messages=[_frames_message(pngs)],
                                                             max_tokens=checks.MAX_TOKENS, stream=True)
    last = [event for event in streamed][-1]
    assert last.model_extra["stanchat"]["indices"] == list(range(FRAMES))  # the stream says it too


def test_a_frame_list_encodes_to_the_video_files_tokens(chat, pngs):
    """The service's own path: the images decoded, fitted and encoded give the very features the
    video file gives at the same frames."""
    from stanchat.api.protocol import parse_request
    from stanchat.api.service import ChatService

    service = ChatService(chat, chat.engine, ApiConfig())  # the engine the chat has: none is closed
    try:
        frames = service.prepare(parse_request({"messages": [_frames_message(pngs)], "fps": 8}))
        video = service.prepare(parse_request({"messages": [video_message(data_url(LEFT))], "frames": FRAMES}))
    finally:
        service.pool.shutdown()
        service._spool.cleanup()
    assert torch.equal(frames.encoded.features, video.encoded.features)
    assert frames.encoded.clip.timestamps == [i / 8 for i in range(FRAMES)]  # fps: the images' rate
    assert chat.encode(LEFT, VideoOptions(frames=FRAMES)).features.equal(frames.encoded.features)


def test_more_images_than_frames_are_sampled_uniformly(server, pngs):
    _, answer = checks.ask(server, [_frames_message(pngs)], extra_body={"frames": 3, "fps": 4})
    record = _record(answer)
    # the middles of 3 equal segments of 8 images: 8/6, 8/2, 40/6 -> images 1, 4, 6
    assert record["frames"] == 3 and record["indices"] == [1, 4, 6]
    assert record["timestamps"] == [0.25, 1.0, 1.5]


def test_frame_lists_are_capped_and_take_no_window(server):
    tiny = "data:image/png;base64,AA=="
    with pytest.raises(openai.BadRequestError) as err:
        checks.ask(server, [_frames_message([tiny] * 257)])
    assert err.value.body["param"] == "messages[0].content" and "257 image_url parts" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        checks.ask(server, [_frames_message([tiny] * 2)], extra_body={"start": 1})
    assert err.value.body["param"] == "start"


def test_media_io_kwargs_change_the_frames_used(server, chat):
    expected = chat.ask(LEFT, QUESTION, frames=4, max_new_tokens=checks.MAX_TOKENS).text
    io_kwargs = {"media_io_kwargs": {"video": {"num_frames": 4}}}
    _, plain = checks.ask(server, [video_message(data_url(LEFT))])
    _, asked = checks.ask(server, [video_message(data_url(LEFT))], extra_body=io_kwargs)
    _, nested = checks.ask(server, [video_message(data_url(LEFT))], extra_body={"extra_body": io_kwargs})
    assert _record(plain)["frames"] == 16
    assert _record(asked)["frames"] == _record(nested)["frames"] == 4
    assert asked.choices[0].message.content == nested.choices[0].message.content == expected
    _, rated = checks.ask(server, [video_message(data_url(LEFT))],
                          extra_body={"media_io_kwargs": {"video": {"fps": 2}}})
    assert _record(rated)["timestamps"] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]  # 3 s at 2 a second
    with pytest.raises(openai.BadRequestError) as err:
        checks.ask(server, [video_message(data_url(LEFT))], extra_body={"frames": 8, **io_kwargs})
    message = err.value.body["message"]
    assert "frames=8" in message and "media_io_kwargs.video.num_frames=4" in message
    with pytest.raises(openai.BadRequestError) as err:  # the same ceiling as frames: STAN's 64
        checks.ask(server, [video_message(data_url(LEFT))],
                   extra_body={"media_io_kwargs": {"video": {"num_frames": 65}}})
    assert "64" in err.value.body["message"]


class _Media(http.server.BaseHTTPRequestHandler):
    """The loopback media server: serves LEFT, redirects, a body over the cap, a body that stalls."""

    seen: list[str] = []
    release = threading.Event()  # lets the stalled body go on (at teardown)
    redirect_to = ""

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).seen.append(self.path)
        body = LEFT.read_bytes()
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", type(self).redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/big-unannounced":  # no Content-Length: the cap must hold while streaming
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body * 3)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(body) * (3 if self.path == "/big" else 1)))
        self.end_headers()
        if self.path == "/slow":
            self.wfile.write(body[:100])
            self.wfile.flush()
            type(self).release.wait(30)
            return
        if self.path != "/big":
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def media():
    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Media)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        _Media.release.set()
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def _refused(base: str, url: str, says: str):
    """Asking about `url` is a 400 naming the video's field, saying `says`."""
    with pytest.raises(openai.BadRequestError) as err:
        checks.ask(base, [video_message(url)])
    assert err.value.body["param"] == "messages[0].content" and says in err.value.body["message"], err.value.body
    yield


def test_an_allowed_loopback_url_is_fetched(server, chat, media):
    expected = chat.ask(LEFT, QUESTION, max_new_tokens=checks.MAX_TOKENS).text
    _Media.seen.clear()
    _, answer = checks.ask(server, [video_message(f"http://127.0.0.1:{media}/left.mp4")])
    assert answer.choices[0].message.content == expected and _Media.seen == ["/left.mp4"]


def test_remote_urls_are_refused_when_not_allowed(media):
    from stanchat.chat import load

    # a model of its own: a second server on the module's model would close the first one's engine
    with serve_in_thread(_build(load("tiny", device="cpu"))) as base:  # no --allowed-media-domains
        _Media.seen.clear()
        with _refused(base, f"http://127.0.0.1:{media}/left.mp4", "--allowed-media-domains"):
            pass
        assert _Media.seen == []


def test_hosts_not_allowed_are_refused_unfetched_and_so_are_redirects_to_them(server, media):
    _Media.seen.clear()
    for host in ("127.0.0.2", "localhost"):  # loopback too, but not the listed host
        with _refused(server, f"http://{host}:{media}/left.mp4", "not among the hosts"):
            pass
    assert _Media.seen == []
    for target, says in ((f"http://localhost:{media}/left.mp4", "not among the hosts"),
                         (f"file://{LEFT}", "not an http(s) URL")):
        _Media.redirect_to = target
        _Media.seen.clear()
        with _refused(server, f"http://127.0.0.1:{media}/redirect", says):
            pass
        assert _Media.seen == ["/redirect"]  # the redirect's target was never asked


def test_an_allowed_name_with_an_internal_address_is_refused_unless_the_address_is_listed(media):
    """The guard against a listed name whose DNS points inside (rebinding, a cloud metadata address):
    localhost's loopback addresses are not listed, so nothing is fetched."""
    from stanchat.api.errors import ApiError
    from stanchat.api.remote import RemotePolicy, fetch

    url = f"http://localhost:{media}/left.mp4"
    _Media.seen.clear()
    with pytest.raises(ApiError) as err:
        fetch(url, RemotePolicy(frozenset({"localhost"}), FETCH_TIMEOUT, MAX_MEDIA_BYTES), io.BytesIO(), "video")
    assert err.value.status == 400 and "internal address" in err.value.message and _Media.seen == []
    sink = io.BytesIO()
    fetch(url, RemotePolicy(frozenset({"localhost", "127.0.0.1"}), FETCH_TIMEOUT, MAX_MEDIA_BYTES), sink, "video")
    assert sink.getvalue() == LEFT.read_bytes() and _Media.seen == ["/left.mp4"]


def test_only_global_unicast_addresses_count_as_outside():
    """Shared (100.64.0.0/10: carrier NAT, some clouds' metadata services), private, loopback,
    link-local, multicast, reserved and unspecified addresses are internal, IPv4-mapped ones too."""
    import ipaddress

    from stanchat.api.remote import _internal

    inside = ["100.64.0.1", "100.100.100.200", "10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254",
              "224.0.0.1", "240.0.0.1", "0.0.0.0", "::1", "fe80::1", "fd00::1", "::ffff:100.64.0.1", "ff02::1"]
    outside = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"]
    assert [a for a in inside if not _internal(ipaddress.ip_address(a))] == []
    assert [a for a in outside if _internal(ipaddress.ip_address(a))] == []


def test_allowed_hosts_are_bare_names_or_addresses():
    from stanchat.api.config import check_hosts
    from stanchat.errors import StanchatError

    assert check_hosts(["Example.com", "127.0.0.1", "::1"]) == ("example.com", "127.0.0.1", "::1")
    for bad in ("example.com:8080", "http://example.com", "user@example.com", "[::1]"):
        with pytest.raises(StanchatError, match="bare host names"):
            check_hosts([bad])


def test_too_big_and_too_slow_remotes_are_refused(server, media):
    for path in ("/big", "/big-unannounced"):
        with _refused(server, f"http://127.0.0.1:{media}{path}", f"larger than the {MAX_MEDIA_BYTES:,} bytes"):
            pass
    with _refused(server, f"http://127.0.0.1:{media}/slow", f"did not arrive within {FETCH_TIMEOUT:g} s"):
        pass


@pytest.mark.parametrize("fields, param, says", [
    ({"media_io_kwargs": {"video": {"num_frames": 8, "backend": "x"}}}, "media_io_kwargs.video.backend",
     "not supported"),
    ({"media_io_kwargs": {"video": {"num_frames": -1}}}, "media_io_kwargs.video.num_frames", "must be in"),
    ({"media_io_kwargs": {"video": {"num_frames": 8}},
      "extra_body": {"media_io_kwargs": {"video": {"num_frames": 4}}}}, "media_io_kwargs", "disagree"),
    ({"fps": 1, "media_io_kwargs": {"video": {"fps": 2}}}, "fps", "media_io_kwargs.video.fps=2"),
    ({"media_io_kwargs": "num_frames=8"}, "media_io_kwargs", "must be an object"),
])
def test_media_io_kwargs_are_checked_by_name(fields, param, says):
    from stanchat.api.errors import ApiError
    from stanchat.api.protocol import parse_request

    with pytest.raises(ApiError) as err:
        parse_request({"messages": [video_message("data:video/mp4;base64,AA==")], **fields})
    assert err.value.status == 400 and err.value.param == param and says in err.value.message
