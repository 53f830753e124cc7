"""`stanchat api` with the transformers engine, asked with the official `openai` client over loopback."""

import gc
import importlib.util
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from stanchat.api.config import ApiConfig
from tests import api_checks as checks
from tests.api_helpers import (KEY, LEFT, QUESTION, SHRINK, data_url, peak_rss, serve_in_thread, serve_subprocess,
                               video_message)

GIB = 1 << 30
# peak resident memory under 200 requests from 16 clients, measured 0.79 GiB for the server and
# 0.70 GiB for each of its 2 decode workers (CPU build of torch, 2 cores; a worker maps torch and
# torchvision to fit frames to the tower as it decodes them, ~0.45 GiB of it the libraries' pages,
# which the processes share); the bounds leave room for other builds and machines, not for a leak
# that grows with the number of requests
SERVER_PEAK_BOUND = 2 * GIB  # the server process: torch, the tiny model, uvicorn, queued request bodies
WORKER_PEAK_BOUND = GIB  # each decode worker (stanchat.video.watchdog)


@pytest.fixture(scope="module")
def chat():
    from stanchat.chat import load

    return load("tiny", device="cpu")


@pytest.fixture(scope="module")
def expected(chat):
    return chat.ask(LEFT, QUESTION, max_new_tokens=checks.MAX_TOKENS)


@pytest.fixture(scope="module")
def allowed(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


def _build(chat, **config):
    from stanchat.api.server import build

    return build(chat, ApiConfig(**config))


@pytest.fixture(scope="module")
def server(chat, allowed):
    with serve_in_thread(_build(chat, api_key=KEY, allowed_local_media_path=str(allowed), max_pending=16)) as base:
        yield base


def test_models_and_health(server):
    checks.check_models_and_health(server)


def test_answer_equals_the_library_and_counts_video_tokens(server, expected):
    checks.check_answer_and_usage(server, expected.text, expected.video_tokens)


def test_an_image_url_png_is_answered_and_its_tokens_counted(server, chat, tmp_path):
    from PIL import Image

    from stanchat.video import load_video

    png = tmp_path / "frame.png"
    Image.fromarray(load_video(LEFT, frames=1).frames[0]).save(png)
    alone = chat.ask(png, QUESTION, frames=1, max_new_tokens=checks.MAX_TOKENS)  # an image is one frame
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(png, "image/png")}},
                                           {"type": "text", "text": QUESTION}]}
    _, answer = checks.ask(server, [message])
    assert answer.choices[0].message.content == alone.text and alone.text
    usage = answer.usage
    assert usage.video_tokens == alone.video_tokens == usage.prompt_tokens_details.video_tokens
    assert usage.prompt_tokens > usage.video_tokens and usage.completion_tokens > 0
    assert answer.model_extra["stanchat"]["frames"] == 1


def test_stream(server, expected):
    checks.check_stream(server, expected.text)


def test_multi_turn_follow_up_hits_the_video_cache(server, expected):
    checks.check_multi_turn_hits_the_cache(server, expected.text)


def test_corrupt_video_is_400_with_a_message(server, tmp_path):
    checks.check_corrupt_video(server, tmp_path)


def test_wrong_or_missing_key_is_401(server):
    checks.check_keys(server)


def test_local_paths_only_inside_the_allowed_folder(server, allowed, tmp_path, expected):
    checks.check_local_paths(server, allowed, tmp_path, expected.text)


def test_bad_requests_name_the_problem(server):
    checks.check_bad_requests(server)


def test_stop_and_max_tokens(server):
    _, stopped = checks.ask(server, [video_message(data_url(SHRINK))], stop=["triangle"])
    assert (stopped.choices[0].message.content, stopped.choices[0].finish_reason) == ("a blue", "stop")
    _, short = checks.ask(server, [video_message(data_url(SHRINK))], max_tokens=2)
    assert (short.usage.completion_tokens, short.choices[0].finish_reason) == (2, "length")


def test_request_size_and_video_duration_caps(chat):
    app = _build(chat, max_request_bytes=4096, max_video_seconds=0.5)
    with serve_in_thread(app) as base:
        with pytest.raises(openai.APIStatusError) as err:
            checks.ask(base, [video_message(data_url(LEFT))])
        assert err.value.status_code == 413 and "limit" in err.value.body["message"]
    with serve_in_thread(_build(chat, max_video_seconds=0.5)) as base:
        with pytest.raises(openai.BadRequestError) as err:
            checks.ask(base, [video_message(data_url(LEFT))])
        assert "0.5 s limit" in err.value.body["message"] and "time window (start/end)" in err.value.body["message"]
        _, answer = checks.ask(base, [video_message(data_url(LEFT))], extra_body={"start": 1.0, "end": 1.5})
        assert answer.model_extra["stanchat"]["timestamps"][0] >= 1.0  # the advice works: a window under the cap


class _GatedEngine:
    """The real engine, held at a gate so that a request stays inside the server."""

    def __init__(self, engine):
        self.engine, self.name, self.entered, self.gate = engine, engine.name, threading.Event(), threading.Event()

    def generate(self, job):
        self.entered.set()
        self.gate.wait(60)
        return self.engine.generate(job)

    def info(self):
        return self.engine.info()

    def close(self):
        self.engine.close()


def test_full_queue_is_429(chat):
    app = _build(chat, max_pending=1, max_request_bytes=64 << 10)
    service = app.state.service
    service.engine = gated = _GatedEngine(service.engine)
    with serve_in_thread(app) as base, ThreadPoolExecutor(1) as pool:
        first = pool.submit(checks.ask, base, [video_message(data_url(LEFT))])
        assert gated.entered.wait(60)
        with pytest.raises(openai.RateLimitError) as err:
            checks.ask(base, [video_message(data_url(LEFT))])
        assert err.value.status_code == 429 and "busy" in err.value.body["message"]
        assert _post(base, b"{not json") == 400  # checked before it would take a place: told its own mistake
        gated.gate.set()
        assert first.result()[1].choices[0].message.content == "a blue triangle moves left"
        # requests refused after admission give their place back: each bad one leaves room for the next
        bad = [b"{not json", json.dumps({"messages": []}).encode(), b"x" * (65 << 10),
               json.dumps({"model": "gpt-4", "messages": [video_message(data_url(LEFT))]}).encode()]
        assert [_post(base, body) for body in bad] == [400, 400, 413, 404]
        checks.ask(base, [video_message(data_url(LEFT))])  # room again
        assert json.load(urllib.request.urlopen(f"{base}/health"))["pending"] == 0


def test_a_request_past_its_time_limit_is_503_and_holds_its_place_until_its_thread_stops(chat):
    app = _build(chat, request_timeout=1, max_request_bytes=64 << 10)
    service = app.state.service
    service.engine = gated = _GatedEngine(service.engine)
    body = json.dumps({"messages": [video_message(data_url(LEFT))], "max_tokens": 8}).encode()
    with serve_in_thread(app) as base:
        assert _post(base, body) == 503  # held at the gate past --request-timeout
        assert json.load(urllib.request.urlopen(f"{base}/health"))["pending"] == 1  # its generate still runs
        gated.gate.set()
        deadline = time.monotonic() + 60
        while json.load(urllib.request.urlopen(f"{base}/health"))["pending"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert json.load(urllib.request.urlopen(f"{base}/health"))["pending"] == 0
        assert _post(base, body) == 200


def test_requests_whose_body_is_still_arriving_hold_no_place(chat):
    """The engine-independent check the vLLM test runs (tests/api/test_api_vllm.py), checked here too."""
    with serve_in_thread(_build(chat, api_key=KEY, max_pending=2)) as base:
        checks.check_slow_bodies_hold_no_place(base, places=2)


def _post(base: str, body: bytes) -> int:
    request = urllib.request.Request(f"{base}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            assert json.load(response)["choices"][0]["message"]["content"]
            return response.status
    except urllib.error.HTTPError as err:
        assert json.load(err)["error"]["message"]
        return err.code


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak memory is read from Linux's /proc")
def test_load_200_requests_16_clients(tmp_path):
    """A server in its own process: every request is answered or refused with 429, and its peak
    resident memory (and each decode worker's) stays under the stated bounds."""
    import psutil

    bodies = [json.dumps({"messages": [video_message(data_url(video), question)], "max_tokens": 8}).encode()
              for video in (LEFT, SHRINK) for question in (QUESTION, "Which way does it move?")]
    args = ["--model", "tiny", "--device", "cpu", "--max-pending", "8", "--max-batch", "8"]
    with serve_subprocess(sys.executable, args, 300, tmp_path / "server.log") as (base, process), \
            ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda i: _post(base, bodies[i % len(bodies)]), range(200)))
        health = json.load(urllib.request.urlopen(f"{base}/health"))
        server_peak = peak_rss(process.pid)
        worker_peaks = [peak_rss(child.pid) for child in psutil.Process(process.pid).children(recursive=True)]
    assert set(statuses) <= {200, 429} and statuses.count(200) > 0
    assert health["pending"] == 0 and health["batches"] < health["batched_requests"]  # some ran together
    assert server_peak < SERVER_PEAK_BOUND, f"the server's peak RSS was {server_peak / GIB:.2f} GiB"
    assert worker_peaks, "no decode worker under the server: their memory was not measured"
    assert all(peak < WORKER_PEAK_BOUND for peak in worker_peaks), f"decode workers' peaks: {worker_peaks}"


def test_api_help_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys; from stanchat.cli import main\n"
            "try:\n    main(['api', '--help'])\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('torch', 'transformers', 'gradio', 'fastapi', 'uvicorn', 'vllm') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--allowed-local-media-path" in out and out.strip().endswith("[]")


def test_unknown_engine_is_one_line():
    from stanchat.cli import main

    with pytest.raises(SystemExit) as err:
        main(["api", "--engine", "tgi"])
    assert err.value.code == 2


@pytest.mark.slow
def test_with_app_serves_the_browser_app_on_the_same_model(chat):
    from stanchat.app.config import AppConfig
    from stanchat.commands.api import build_with_app

    app = build_with_app(chat, ApiConfig(), AppConfig())
    with serve_in_thread(app) as base:
        with urllib.request.urlopen(f"{base}/app/") as response:
            assert response.status == 200 and b"gradio" in response.read().lower()
        _, answer = checks.ask(base, [video_message(data_url(LEFT))])
        assert answer.choices[0].message.content == "a blue triangle moves left"


def _served_and_dropped() -> weakref.ref:
    """A weak reference to the LLaVA of a tiny chat whose app served a plain and a streamed answer,
    was shut down and dropped: nothing of this function's survives it but what others keep."""
    from stanchat.chat import load

    chat = load("tiny", device="cpu")
    llava = weakref.ref(chat.llava)
    with serve_in_thread(_build(chat, api_key=KEY)) as base:
        checks.check_models_and_health(base)
        checks.ask(base, [video_message(data_url(LEFT))])
        stream = checks.client(base).chat.completions.create(
            model="tiny", messages=[video_message(data_url(LEFT))], max_tokens=2, stream=True)
        assert [event for event in stream]
    return llava


def test_a_dropped_app_lets_its_model_go():
    """benchmarks/serve.py drops the transformers server's model before vLLM starts on the same GPU:
    nothing (FastAPI's module-level caches of the endpoints it classified included) keeps it."""
    llava = _served_and_dropped()
    gc.collect()
    assert llava() is None


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="needs an environment without vLLM")
def test_serve_benchmark_stops_at_once_when_its_vllm_server_exits():
    """benchmarks/serve.py's vLLM row: a server that exits before it answers /health is reported with
    its exit code and the tail of its log, not waited on for the whole start-up allowance."""
    from benchmarks import serve

    args = serve.build_parser().parse_args(["--vllm-python", sys.executable])  # this environment has no vLLM
    with pytest.raises(RuntimeError, match="exited with 2") as err:
        serve.vllm(b"{}", args)
    assert "--engine vllm needs vLLM in this environment" in str(err.value)


def test_a_stream_gives_its_place_back_when_the_client_is_gone_before_the_first_event():
    """The request's scope (its place in --max-pending, its uploads) is ended by the response itself,
    also when sending the headers fails (the client left) and the body never starts."""
    import asyncio

    from stanchat.api.app import _ScopedStream

    ended, cleaned = [], []

    class Scope:
        deadline = float("inf")

        def end(self):
            ended.append(True)

    async def body():
        try:
            yield "data: x\n\n"
        finally:
            cleaned.append(True)

    async def send(message):
        raise OSError("client gone")

    async def receive():
        return {"type": "http.disconnect"}

    response = _ScopedStream(body(), Scope(), media_type="text/event-stream")
    scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
    asyncio.run(response(scope, receive, send))  # a client gone is no error to raise
    assert ended == [True] and cleaned == [] and not response.finished
