"""What every `stanchat api` engine must do, checked with the official `openai` client.

Each check takes the server's base URL; `expected` is the library's own greedy answer to
QUESTION about LEFT (`stanchat.chat.VideoChat.ask`).
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import openai
import pytest

from tests.api_helpers import KEY, LEFT, QUESTION, data_url, video_message

MAX_TOKENS = 24


def client(base: str, key: str | None = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key or "none", max_retries=0, timeout=120)


def ask(base: str, messages: list[dict], **kwargs):
    """The raw response (headers and parsed completion) of one non-streamed request."""
    kwargs = {"max_tokens": MAX_TOKENS, "temperature": 0, **kwargs}
    raw = client(base).chat.completions.with_raw_response.create(model="tiny", messages=messages, **kwargs)
    return raw, raw.parse()


def check_models_and_health(base: str) -> None:
    assert [m.id for m in client(base).models.list().data] == ["tiny"]
    with urllib.request.urlopen(f"{base}/health") as response:
        assert json.load(response)["status"] == "ok"


def check_answer_and_usage(base: str, expected: str, video_tokens: int) -> None:
    _, answer = ask(base, [video_message(data_url(LEFT))])
    assert answer.choices[0].message.content == expected
    assert answer.choices[0].finish_reason == "stop"
    usage = answer.usage
    assert usage.video_tokens == video_tokens == usage.prompt_tokens_details.video_tokens
    assert usage.prompt_tokens > video_tokens and usage.completion_tokens >= len(expected.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def check_stream(base: str, expected: str) -> None:
    stream = client(base).chat.completions.create(
        model="tiny", messages=[video_message(data_url(LEFT))], max_tokens=MAX_TOKENS, temperature=0,
        stream=True, stream_options={"include_usage": True})
    pieces, finish, usage, record = [], None, None, None
    for event in stream:
        if event.usage is not None:
            usage = event.usage
        for choice in event.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
        record = (event.model_extra or {}).get("stanchat", record)
    assert "".join(pieces) == expected and len([p for p in pieces if p]) > 1
    assert finish == "stop" and usage.completion_tokens > 0
    assert record["frames"] == len(record["timestamps"]) == 16  # what the model saw, as a plain answer says


def check_multi_turn_hits_the_cache(base: str, expected: str) -> None:
    url = data_url(LEFT)
    first, _ = ask(base, [video_message(url)])
    turns = [video_message(url), {"role": "assistant", "content": expected},
             {"role": "user", "content": "Which way does it move?"}]
    raw, answer = ask(base, turns)
    assert raw.headers["x-stanchat-video-cache"] == "hit"  # no decoding, no tower
    assert answer.model_extra["stanchat"]["video_cache"] == "hit"
    assert answer.choices[0].message.content == "left"
    _, alone = ask(base, [video_message(url, "Which way does it move?")])
    assert answer.usage.prompt_tokens > alone.usage.prompt_tokens  # the history reached the prompt


def check_corrupt_video(base: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(LEFT.read_bytes()[:300])  # a truncated header
    with pytest.raises(openai.BadRequestError) as err:
        ask(base, [video_message(data_url(broken))])
    message = err.value.body["message"]
    assert err.value.status_code == 400 and message and "Traceback" not in message and "\n" not in message


def check_keys(base: str) -> None:
    for key in (None, "sk-wrong"):
        with pytest.raises(openai.AuthenticationError) as err:
            client(base, key).chat.completions.create(model="tiny", messages=[video_message(data_url(LEFT))])
        assert err.value.status_code == 401 and "API key" in err.value.body["message"]
    request = urllib.request.Request(f"{base}/v1/models")  # no Authorization header at all
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request)
    assert err.value.code == 401 and json.load(err.value)["error"]["type"] == "authentication_error"


def check_local_paths(base: str, allowed: Path, tmp_path: Path, expected: str) -> None:
    inside = allowed / "left.mp4"
    if not inside.exists():
        shutil.copy(LEFT, inside)
    _, answer = ask(base, [video_message(inside.as_uri())])
    assert answer.choices[0].message.content == expected
    outside = tmp_path / "outside.mp4"
    shutil.copy(LEFT, outside)
    for url in (str(outside), outside.as_uri(), str(allowed / ".." / outside.name)):
        with pytest.raises(openai.PermissionDeniedError) as err:
            ask(base, [video_message(url)])
        message = err.value.body["message"]
        assert err.value.status_code == 403 and "outside" in message
        assert message.split(" is outside ")[1] == "the folder this server allows (--allowed-local-media-path)"


def check_bad_requests(base: str) -> None:
    cases = [([{"role": "user", "content": QUESTION}], "video_url"),
             ([video_message("data:text/plain;base64,aGVsbG8=")], "the uploaded video is a text file, not a video"),
             ([video_message("https://example.com/a.mp4")], "remote URLs"),
             ([video_message("data:video/mp4;base64,@@@")], "base64")]
    for messages, says in cases:
        with pytest.raises(openai.BadRequestError) as err:
            ask(base, messages)
        assert says in err.value.body["message"] and "stanchat-api-" not in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        ask(base, [video_message(data_url(LEFT))], extra_body={"temporal": "sideways"})
    assert err.value.body["param"] == "temporal"


def _health(base: str) -> dict:
    request = urllib.request.Request(f"{base}/health", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def _hold(base: str, body: bytes) -> socket.socket:
    """A request whose body is half sent: its body is still arriving until the rest is sent."""
    url = urlparse(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=120)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    sock.sendall(head.encode() + body[: len(body) // 2])
    return sock


def check_slow_bodies_hold_no_place(base: str, places: int) -> None:
    """On a server of `places` places (--max-pending), as many requests whose body is still arriving
    keep nobody out: they are counted apart (--max-receiving), and a complete request is answered
    meanwhile whatever the engine; once the held ones finish sending, each is answered."""
    body = json.dumps({"model": "tiny", "messages": [video_message(data_url(LEFT))], "max_tokens": 8}).encode()
    held = [_hold(base, body) for _ in range(places)]
    deadline = time.monotonic() + 60  # until the server has read their headers
    while _health(base)["receiving"] < places and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (_health(base)["receiving"], _health(base)["pending"]) == (places, 0)
    _, answer = ask(base, [video_message(data_url(LEFT))])
    assert answer.choices[0].message.content == "a blue triangle moves left"
    for sock in held:
        with sock:
            sock.sendall(body[len(body) // 2:])
            reply = b"".join(iter(lambda: sock.recv(65536), b""))
        assert reply.startswith(b"HTTP/1.1 200")
        assert json.loads(reply.partition(b"\r\n\r\n")[2])["choices"][0]["message"]["content"] == "a blue triangle moves left"
    assert (_health(base)["receiving"], _health(base)["pending"]) == (0, 0)
