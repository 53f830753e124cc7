"""The real lmms-eval (0.7.3, in .venv-lmms) runs `--model openai` against a running `stanchat api
--model tiny`, offline, on a local task written here (`training.synthworld.mcq`'s generation twin),
in both of its routes:
- `pass_video_url=True`: the video goes as a file:// URL, the frame count as vLLM's
  `media_io_kwargs.video.num_frames`; its answers equal `stanchat ask --batch` at that count;
- the default: lmms-eval decodes the video itself (qwen-vl-utils, read by decord:
  FORCE_QWENVL_VIDEO_READER=decord, as torchvision no longer reads video) and sends its frames as
  image_url parts; its answers equal what the library answers on those very frames (recorded by a
  proxy: decord, seeking, need not return the same frames on another run).
"""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api_helpers import serve_subprocess
from tests.lmms.lmms_env import ROOT, lmms_python

FRAMES = 8  # not the server's default 16: the count must reach the model
MAX_NEW_TOKENS = 8  # the generation task's (training/synthworld/mcq.py)
TIMEOUT = 600  # seconds for each run; one takes 20-60 on two shared cores
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "FORCE_QWENVL_VIDEO_READER": "decord"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    from training.synthworld.mcq import write_mcq
    from training.synthworld.world import WorldConfig

    return write_mcq(tmp_path_factory.mktemp("mcq"), n=4, seed=11, config=WorldConfig(frames=16))


@pytest.fixture(scope="module")
def server(questions, tmp_path_factory):
    python = lmms_python()  # fail or skip before the server starts
    log = tmp_path_factory.mktemp("server") / "server.log"
    # one request per generate: lmms-eval sends its questions concurrently, and a left-padded batch row's
    # logits can differ from a lone row's in the last bits, which flips a near-tie of this tiny model
    # (the library's reference answers one at a time; tests/engine/test_engine.py checks batching)
    args = ["--model", "tiny", "--device", "cpu", "--allowed-local-media-path", str(questions.root), "--max-batch", "1"]
    with serve_subprocess(sys.executable, args, 120, log) as (base, _):
        yield base, python


def _lmms(python: str, base: str, questions, out: Path, home: Path, route: dict) -> dict:
    """lmms-eval's generated answers on the generation task: doc id -> answer."""
    task = questions.tasks[1]
    args = ",".join(f"{k}={v}" for k, v in {"model": "tiny", "base_url": f"{base}/v1", "api_key": "none",
                                            "max_frames_num": FRAMES, "max_retries": 1, **route}.items())
    command = [python, "-m", "lmms_eval", "--model", "openai", "--model_args", args, "--tasks", task,
               "--include_path", str(questions.root), "--output_path", str(out), "--log_samples"]
    env = {**os.environ, **ENV, "HF_HOME": str(home), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    files = list(out.rglob(f"*_samples_{task}.jsonl"))
    assert len(files) == 1, (sorted(p.name for p in out.rglob("*")), run.stderr[-3000:])
    rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert not any("LMMS_EVAL_REQUEST_FAILED" in str(row["filtered_resps"]) for row in rows), rows
    return {row["doc_id"]: row["filtered_resps"] for row in rows}


def test_video_url_route_equals_ask_batch(server, questions, tmp_path):
    base, python = server
    answers = _lmms(python, base, questions, tmp_path / "out", tmp_path / "home", {"pass_video_url": True})
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps({"id": i, "video": str(questions.root / q["video"]),
                                            "question": q["question"]}) + "\n" for i, q in enumerate(questions.items)))
    out = tmp_path / "answers.jsonl"
    run = subprocess.run([sys.executable, "-m", "stanchat", "ask", "--batch", str(requests), "--out", str(out),
                          "--model", "tiny", "--device", "cpu", "--frames", str(FRAMES), "--max-new-tokens",
                          str(MAX_NEW_TOKENS), "--temperature", "0"], capture_output=True, text=True, timeout=TIMEOUT,
                         env={**os.environ, **ENV, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    expected = {row["id"]: row["answer"] for row in map(json.loads, out.read_text().splitlines())}
    assert len(answers) == len(questions.items) == len(expected)
    assert answers == expected


def test_frame_list_route_equals_the_library_on_those_frames(server, questions, tmp_path):
    """The reference: the very messages lmms-eval sent (recorded by a proxy in front of the server:
    its client-side decoder need not pick the same frames twice), their images assembled by the
    library (`load_stills`) and answered by `VideoChat.ask`, without the server."""
    base, python = server
    with _recording(base) as (proxy, bodies):
        answers = _lmms(python, proxy, questions, tmp_path / "out", tmp_path / "home", {})
    expected = _library_answers([body["messages"] for body in bodies], tmp_path / "frames")
    assert len(answers) == len(questions.items) == len(expected)
    assert sorted(answers.values()) == sorted(expected.values())


@contextlib.contextmanager
def _recording(base: str):
    """A proxy on 127.0.0.1 in front of `base` that keeps each chat request's JSON body; yields its
    URL and the list of bodies."""
    import threading
    import urllib.error
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies: list[dict] = []

    class Forward(BaseHTTPRequestHandler):
        def _forward(self, body: bytes | None) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
            request = urllib.request.Request(base + self.path, data=body, headers=headers, method=self.command)
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                    status, data = response.status, response.read()
            except urllib.error.HTTPError as err:
                status, data = err.code, err.read()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path.endswith("/chat/completions"):
                bodies.append(json.loads(body))
            self._forward(body)

        def do_GET(self) -> None:
            self._forward(None)

        def log_message(self, *args) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}", bodies
    finally:
        proxy.shutdown()
        thread.join(timeout=10)


def _library_answers(conversations: list[list[dict]], folder: Path) -> dict:
    """doc id -> the library's answer to each conversation's question about its image_url frames."""
    import base64

    from stanchat.chat import load
    from stanchat.video.stills import load_stills

    chat = load("tiny", device="cpu")
    folder.mkdir()
    answers = {}
    for i, messages in enumerate(conversations):
        parts = messages[0]["content"]
        urls = [part["image_url"]["url"] for part in parts if part["type"] == "image_url"]
        question = next(part["text"] for part in parts if part["type"] == "text")
        assert len(urls) == FRAMES and all(url.startswith("data:image/png;base64,") for url in urls)
        paths = []
        for k, url in enumerate(urls):
            paths.append(folder / f"{i}-{k}.png")
            paths[-1].write_bytes(base64.b64decode(url.partition(",")[2]))
        clip = load_stills(paths, list(range(len(paths))), len(paths), fit=chat.preprocessor.fit)
        answers[i] = chat.ask(clip, question, max_new_tokens=MAX_NEW_TOKENS).text
    return answers
