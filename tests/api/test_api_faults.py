"""`stanchat api` against hostile and faulty clients, the server in its own process on loopback.

One server (the tiny model) for the module, its temporary folder a test folder. Every request
ends in an answer or a JSON error of the right class (4xx the client's, 5xx the server's); the
tests below run in order and the last checks what the whole run left: no uploaded file in the
upload folder, no traceback in the server's log. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.api_helpers import KEY, LEFT, QUESTION, busy_worker, data_url, peak_rss, running, serve_subprocess, video_message
from tests.big_clips import repeat, write_big_clip
from tests.tiny_llava import write_video

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="raw sockets and flock on Linux")

BODY_TIMEOUT = 8  # --body-timeout: long enough for the healthy requests made while the trickling ones trickle
HEADER_TIMEOUT = 3  # --header-timeout
PLACES = 4  # --max-pending
TRICKLERS = 3
ANSWER = "a blue triangle moves left"
PEAK_RSS = 1.5 * 2**30  # bytes the server and each decode worker may hold at most, whatever the video
GONE_WITHIN = 20  # seconds a hung-up request's decode worker may live on (a full decode takes ~10 s here)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    """The server's temporary folder, holding before it starts the upload folder of a killed server
    (its owner lock free) and the one of a live server (its lock held here)."""
    folder = tmp_path_factory.mktemp("tmp")
    dead = folder / "stanchat-api-killed"
    dead.mkdir()
    (dead / ".owner").write_text("999999\n")
    (dead / "upload-left-behind.mp4").write_bytes(b"x" * 1000)
    alive = folder / "stanchat-api-alive"
    alive.mkdir()
    return folder


@pytest.fixture(scope="module")
def server(tmp, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "server.log"
    alive = open(tmp / "stanchat-api-alive" / ".owner", "w")
    fcntl.flock(alive, fcntl.LOCK_EX)  # as the live server's process holds it
    args = ["--model", "tiny", "--device", "cpu", "--api-key", KEY, "--max-pending", str(PLACES),
            "--body-timeout", str(BODY_TIMEOUT), "--header-timeout", str(HEADER_TIMEOUT), "--request-timeout", "120"]
    with alive, serve_subprocess(sys.executable, args, 300, log, env={"TMPDIR": str(tmp)}) as (base, process):
        yield base, log, process


def test_whose_fault_each_exception_is(caplog):
    """One place decides: the client's mistakes keep their 4xx; the server's own failures are 503
    with one line (an encoder's 400 caused by a killed worker included); anything else is a 500."""
    from stanchat.api.errors import ApiError
    from stanchat.api.faults import public
    from stanchat.errors import ResourceError, VideoError

    class OutOfMemoryError(RuntimeError):  # torch's, by name: the server need not import torch here
        pass

    def worded(cause: Exception) -> ApiError:  # as the encoder words a StanchatError
        try:
            raise ApiError(400, f"the uploaded video: {cause}", param="messages") from cause
        except ApiError as err:
            return err

    killed = worded(ResourceError("the decode worker was killed (killed by SIGKILL)"))
    cases = {"killed": (killed, 503), "client": (worded(VideoError("not a video")), 400),
             "memory": (MemoryError(), 503), "cuda": (OutOfMemoryError("CUDA out of memory"), 503),
             "bug": (KeyError("x"), 500), "unworded": (VideoError("no frames"), 400)}
    with caplog.at_level("ERROR", logger="stanchat.api.faults"):
        answers = {name: public(err) for name, (err, _) in cases.items()}
    assert {name: answer.status for name, answer in answers.items()} == {name: s for name, (_, s) in cases.items()}
    assert "killed by SIGKILL" in answers["killed"].message and answers["killed"].body()["error"]["type"] == "server_error"
    assert "\n" not in answers["memory"].message and "KeyError" in answers["bug"].message
    assert len(caplog.records) == 4  # killed, memory, cuda, bug: one record each


def _request(base: str, body: bytes | dict, timeout: float = 120) -> tuple[int, dict]:
    """(status, JSON body) of one POST; asserts an error is one JSON line of the right class."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}/v1/chat/completions", data=data, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        payload = json.load(err)
        _check_error(err.code, payload)
        return err.code, payload


def _check_error(status: int, payload: dict) -> None:
    error = payload["error"]
    assert error["message"] and "\n" not in error["message"] and "Traceback" not in error["message"]
    assert (error["type"] == "server_error") == (status >= 500), (status, error)


def _health(base: str) -> dict:
    request = urllib.request.Request(f"{base}/health", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _idle(base: str) -> dict:
    """/health once no request is inside (at most 30 s of waiting)."""
    deadline = time.monotonic() + 30
    while (health := _health(base))["pending"] + health["receiving"] and time.monotonic() < deadline:
        time.sleep(0.1)
    return health


def _ask(url: str, question: str = QUESTION, **fields) -> dict:
    return {"model": "tiny", "messages": [video_message(url, question)], "max_tokens": 8, **fields}


def _connect(base: str, body: bytes) -> socket.socket:
    """A connection that has sent a request's headers for `body` (Content-Length) and none of it."""
    url = urlparse(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=60)
    sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {KEY}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode())
    return sock


def _dribble(sock: socket.socket, data: bytes, limit: int) -> bytes:
    """Send `data` on `sock` one byte a second until the server answers or closes (at most `limit`
    bytes): its reply, b"" if it closed without one."""
    sock.settimeout(1.0)
    for byte in data[:limit]:
        try:
            sock.sendall(bytes([byte]))
            reply = sock.recv(65536)
        except socket.timeout:
            continue  # nothing from the server yet: the next byte
        except OSError:  # the server closed the connection
            return b""
        return _rest(sock, reply) if reply else b""
    return b"never answered"


def _trickle(base: str, body: bytes, replies: list) -> None:
    """Send `body` one byte a second until the server answers (at most 2 * BODY_TIMEOUT bytes)."""
    with _connect(base, body) as sock:
        replies.append(_dribble(sock, body, 2 * BODY_TIMEOUT))


def _rest(sock: socket.socket, start: bytes) -> bytes:
    """`start` and what follows of its HTTP response, up to its Content-Length (at most 10 reads)."""
    reply = start
    for _ in range(10):
        head, _, body = reply.partition(b"\r\n\r\n")
        length = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")]
        if length and len(body) >= length[0]:
            break
        reply += sock.recv(65536)
    return reply


def test_an_upload_folder_left_by_a_killed_server_is_cleared_at_start(server, tmp):
    assert not (tmp / "stanchat-api-killed").exists()
    assert (tmp / "stanchat-api-alive").is_dir()  # its server's lock is held: not an orphan


def test_health_shows_counters_only_with_the_key(server):
    base = server[0]
    with urllib.request.urlopen(f"{base}/health", timeout=30) as response:
        assert json.load(response) == {"status": "ok"}
    assert _health(base)["max_pending"] == PLACES


def test_trickling_clients_keep_nobody_out(server):
    """TRICKLERS clients send a body a byte a second; meanwhile healthy clients are answered (the
    server has PLACES places); the trickling ones get 408 once --body-timeout has passed."""
    base = server[0]
    body = json.dumps(_ask(data_url(LEFT))).encode()
    replies: list[bytes] = []
    threads = [threading.Thread(target=_trickle, args=(base, body, replies)) for _ in range(TRICKLERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while _health(base)["receiving"] < TRICKLERS and time.monotonic() < deadline:
        time.sleep(0.05)
    answers = [_request(base, _ask(data_url(LEFT))) for _ in range(PLACES + 1)]
    still_trickling = _health(base)["receiving"]
    for thread in threads:
        thread.join(timeout=4 * BODY_TIMEOUT)
    assert [status for status, _ in answers] == [200] * (PLACES + 1)
    assert all(payload["choices"][0]["message"]["content"] == ANSWER for _, payload in answers)
    assert still_trickling == TRICKLERS  # they were trickling all along
    assert len(replies) == TRICKLERS and all(reply.startswith(b"HTTP/1.1 408") for reply in replies), replies
    _check_error(408, json.loads(replies[0].partition(b"\r\n\r\n")[2]))


def _trickle_headers(sock: socket.socket, head: bytes) -> bytes:
    """Send `head` on `sock` one byte a second until the server answers or closes (at most
    4 * HEADER_TIMEOUT bytes), then close it: the reply, b"" if the server closed without one."""
    with sock:
        return _dribble(sock, head, 4 * HEADER_TIMEOUT)


def test_slow_and_silent_headers_are_cut_and_keep_nobody_out(server):
    """Connections that send nothing are closed quietly after --header-timeout; headers sent a byte a
    second (on a new connection, or as a kept-alive connection's next request) get a 408 and the
    connection closed; a healthy request is answered meanwhile."""
    base = server[0]
    url = urlparse(base)
    head = (f"GET /health HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {KEY}\r\n\r\n").encode()
    silent = [socket.create_connection((url.hostname, url.port), timeout=30) for _ in range(5)]
    kept = socket.create_connection((url.hostname, url.port), timeout=30)
    kept.sendall(head)
    assert _rest(kept, kept.recv(65536)).startswith(b"HTTP/1.1 200")  # its first request, whole
    with ThreadPoolExecutor(3) as pool:
        new = [pool.submit(_trickle_headers, socket.create_connection((url.hostname, url.port)), head)
               for _ in range(2)]
        next_one = pool.submit(_trickle_headers, kept, head)
        assert _request(base, _ask(data_url(LEFT)))[0] == 200
        replies = [future.result(timeout=10 * HEADER_TIMEOUT) for future in [*new, next_one]]
    for reply in replies:
        assert reply.startswith(b"HTTP/1.1 408"), reply
        _check_error(408, json.loads(reply.partition(b"\r\n\r\n")[2]))
    for sock in silent:
        with sock:
            assert sock.recv(1) == b""  # closed, nothing said


def test_clients_that_hang_up_mid_body_mid_answer_and_mid_stream(server):
    base = server[0]
    body = json.dumps(_ask(data_url(LEFT))).encode()
    for _ in range(3):  # mid-body
        with _connect(base, body) as sock:
            sock.sendall(body[: len(body) // 2])
    for _ in range(3):  # the whole request, then gone while it is decoded and answered
        with _connect(base, body) as sock:
            sock.sendall(body)
    for _ in range(3):  # mid-stream: the first event read, then gone
        streamed = json.dumps(_ask(data_url(LEFT), max_tokens=200, stream=True)).encode()
        with _connect(base, streamed) as sock:
            sock.sendall(streamed)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    health = _idle(base)
    assert (health["pending"], health["receiving"]) == (0, 0)
    assert _request(base, _ask(data_url(LEFT)))[0] == 200  # the server is none the worse


def test_uploads_refused_after_parsing_are_never_written(server, tmp):
    """50 data URLs with a question the chat template refuses: each a 400, and not one file written."""
    base = server[0]
    url = data_url(LEFT)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: _request(base, _ask(url, "What is <image> here?")), range(50)))
    assert {status for status, _ in replies} == {400}
    assert all(payload["error"]["param"] == "messages" for _, payload in replies)
    assert _uploads(tmp) == []


def test_frames_past_the_models_reach_are_refused_before_anything_is_written(server, tmp):
    status, payload = _request(server[0], _ask(data_url(LEFT), frames=2000))
    assert status == 400 and payload["error"]["param"] == "frames", payload
    assert payload["error"]["message"].startswith("frames 2000 is more than the 64 frames")
    assert _uploads(tmp) == []


def test_a_4000x4000_clip_is_answered_in_bounded_memory(server, tmp_path):
    """Frames are fitted to the tower in the decode worker as each is decoded: neither the worker nor
    the server holds 16 frames of 4000x4000 (768 MB as RGB), let alone their pickled copies."""
    base, _, process = server
    clip = write_big_clip(tmp_path / "big.mp4", 4000, 4000)
    assert clip.stat().st_size < 1 << 20
    status, payload = _request(base, _ask(data_url(clip), frames=16))
    assert status == 200 and payload["stanchat"]["frames"] == 16, payload
    peaks = _peaks(process.pid)
    assert len(peaks) >= 2 and max(peaks.values()) < PEAK_RSS, peaks


def _peaks(server_pid: int) -> dict[int, int]:
    """Peak resident bytes of the server and of each of its decode workers alive now."""
    import psutil

    pids = [server_pid, *(child.pid for child in psutil.Process(server_pid).children(recursive=True))]
    return {pid: peak_rss(pid) for pid in pids}


def test_a_clip_over_the_frame_size_ceiling_is_refused_before_decoding(server, tmp_path):
    """6000x6000 is over the default --max-frame-pixels (8K: 8192x4352): a 400 naming both sizes and
    the flag, decided from the probe (tests/video/test_video_pixels.py: no frame is decoded)."""
    clip = write_big_clip(tmp_path / "huge.mp4", 6000, 6000, frames=1)
    status, payload = _request(server[0], _ask(data_url(clip)))
    message = payload["error"]["message"]
    assert status == 400 and "has 6000x6000 frames" in message and "35,651,584 pixels" in message, payload
    assert "--max-frame-pixels" in message and "stanchat-api-" not in message


def test_the_same_new_video_at_four_frame_counts_at_once(server, tmp_path):
    """Each request's upload is its own: none loses its file to another's encode."""
    base = server[0]
    for round_ in range(3):
        url = data_url(write_video(tmp_path / f"new-{round_}.mp4", frames=24 + round_))
        with ThreadPoolExecutor(PLACES) as pool:
            replies = list(pool.map(lambda n: _request(base, _ask(url, frames=n)), range(2, 2 + PLACES)))
        assert [status for status, _ in replies] == [200] * PLACES, replies
        assert [payload["stanchat"]["frames"] for _, payload in replies] == list(range(2, 2 + PLACES))


def _kill_the_busy_worker(server_pid: int, stop: threading.Event) -> bool:
    """SIGKILL the first decode worker of the server seen working, as the out-of-memory killer would."""
    worker = busy_worker(server_pid, stop)
    if worker is not None:
        os.kill(worker, signal.SIGKILL)
    return worker is not None


def test_a_decode_worker_killed_mid_request_is_the_servers_503(server, tmp_path):
    base, _, process = server
    url = data_url(write_video(tmp_path / "long.mp4", frames=400, size=256))
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        killed = pool.submit(_kill_the_busy_worker, process.pid, stop)
        status, payload = _request(base, _ask(url, frames=64))
        stop.set()
        assert killed.result()
    assert status == 503 and "decode worker was killed" in payload["error"]["message"], payload
    assert _request(base, _ask(data_url(LEFT)))[0] == 200  # a new worker decodes the next video


def test_a_client_that_hangs_up_ends_its_decode(server, tmp_path):
    """Two requests for a slow decode (32 frames of 4000x4000, ~10 s) whose clients hang up once it
    runs: each one's decode worker is killed at once, not left to finish; the next request is served."""
    base, _, process = server
    slow = repeat(write_big_clip(tmp_path / "big.mp4", 4000, 4000), tmp_path / "slow.mp4", copies=4)
    body = json.dumps(_ask(data_url(slow), frames=32)).encode()
    for _ in range(2):
        with _connect(base, body) as sock:
            sock.sendall(body)
            worker = busy_worker(process.pid, threading.Event())
        assert worker is not None  # the socket is closed: the client has gone
        deadline = time.monotonic() + GONE_WITHIN
        while running(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(worker)
    assert _request(base, _ask(data_url(LEFT)))[0] == 200
    health = _idle(base)
    assert (health["pending"], health["receiving"]) == (0, 0)


def _raw_fields(**raw: str) -> bytes:
    """A valid request body with `raw` JSON text spliced in as fields (NaN, Infinity: not JSON)."""
    body = json.dumps(_ask(data_url(LEFT)))
    return (body[:-1] + "".join(f', "{name}": {text}' for name, text in raw.items()) + "}").encode()


@pytest.mark.parametrize("body, param, says", [
    (_raw_fields(temperature="NaN"), "temperature", "finite"),
    (_raw_fields(top_p="Infinity"), "top_p", "finite"),
    (_raw_fields(fps="-Infinity"), "fps", "finite"),
    (_raw_fields(seed="NaN"), "seed", "integer"),
    (_raw_fields(frames="1e999"), "frames", "integer"),
    (b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, "nested more than"),
    (b"[" * 100_000, None, "nested more than"),
    (json.dumps(_ask("/etc/pass\u0000wd")).encode(), "messages[0].content", "NUL"),
    (json.dumps(_ask(data_url(LEFT), "What\u0000 happens?")).encode(), "messages[0].content", "NUL"),
    (json.dumps({"messages": "hello"}).encode(), "messages", "list"),
    (json.dumps({**_ask(data_url(LEFT)), "model": 5}).encode(), "model", "string"),
    (json.dumps({**_ask(data_url(LEFT)), "temperature": "hot"}).encode(), "temperature", "number"),
    (json.dumps({**_ask(data_url(LEFT)), "stream": "yes"}).encode(), "stream", "true or false"),
    (b"\xff\xfe not utf-8", None, "not valid JSON"),
], ids=["nan", "infinity", "-infinity", "nan-seed", "huge-frames", "deep", "deep-top", "nul-path", "nul-text",
        "messages-type", "model-type", "temperature-type", "stream-type", "not-utf8"])
def test_hostile_bodies_are_400_naming_the_field(server, body, param, says):
    status, payload = _request(server[0], body)
    assert status == 400 and says in payload["error"]["message"] and payload["error"]["param"] == param


def test_nothing_left_behind_and_no_traceback(server, tmp):
    """Last: the run left no uploaded file and no traceback; stopped, the server takes its upload folder."""
    base, log, process = server
    health = _idle(base)
    assert (health["pending"], health["receiving"]) == (0, 0)
    assert _uploads(tmp) == []
    process.terminate()
    process.wait(timeout=60)
    assert [path.name for path in tmp.glob("stanchat-api-*")] == ["stanchat-api-alive"]
    text = log.read_text()
    assert "Traceback" not in text and "ClientDisconnect" not in text, text[-3000:]


def _uploads(tmp: Path) -> list[str]:
    """Uploaded files in the servers' upload folders under `tmp`."""
    return sorted(str(path) for path in tmp.glob("stanchat-api-*/upload-*"))
