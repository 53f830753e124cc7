"""Running `stanchat api` for tests: in this process (uvicorn in a thread) or as a subprocess."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
LEFT, SHRINK = EXAMPLES / "blue-triangle-left.mp4", EXAMPLES / "blue-triangle-shrink.mp4"
QUESTION = "What happens in this video?"
KEY = "sk-test-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data_url(path: Path, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def video_message(url: str, question: str = QUESTION) -> dict:
    return {"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                        {"type": "text", "text": question}]}


def wait_healthy(base: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no healthy server at {base} after {timeout} s")


@contextlib.contextmanager
def serve_in_thread(app, port: int | None = None, graceful_seconds: float | None = None):
    """Serve a FastAPI app on 127.0.0.1 from a thread; yields its base URL. `graceful_seconds`
    bounds how long shutting down waits for open connections (a Gradio client's heartbeat stream
    stays open until its next beat) before the app's shutdown handlers run; None waits for them."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=graceful_seconds))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, 60)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def serve_subprocess(python: str, args: list[str], timeout: float, log: Path, env: dict | None = None):
    """`python -m stanchat api ARGS --port P` in its own process (with `env` added to this one's);
    yields (its base URL, the process)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    with open(log, "w") as out:
        process = subprocess.Popen([python, "-m", "stanchat", "api", *args, "--port", str(port)], cwd=ROOT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_healthy(base, timeout, process)
        except RuntimeError as err:
            raise RuntimeError(f"{err}; its log:\n{log.read_text()[-3000:]}") from err
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def peak_rss(pid: int) -> int:
    """The most resident memory process `pid` has held so far, in bytes (Linux: VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def cpu_ticks(pid: int) -> int:
    """CPU time process `pid` has used so far, in clock ticks (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def running(pid: int) -> bool:
    """Process `pid` exists and has not died (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def busy_worker(parent: int, stop: threading.Event, seconds: float = 60) -> int | None:
    """The first child process of `parent` (a decode worker) seen working, its CPU time growing; polls
    every 10 ms for at most `seconds` or until `stop`; None if none was."""
    import psutil

    seen: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        for child in psutil.Process(parent).children(recursive=True):
            try:
                ticks = cpu_ticks(child.pid)
            except OSError:
                continue
            if child.pid in seen and ticks > seen[child.pid]:
                return child.pid
            seen[child.pid] = ticks
        time.sleep(0.01)
    return None


def side_python(folder: str, what: str) -> str:
    """The python of the side environment ROOT/`folder` (made by scripts/test; `what` it holds): under
    CI a missing one fails the test, elsewhere it skips it, saying why its install failed."""
    import pytest

    python = ROOT / folder / "bin" / "python"
    if not python.exists():
        message = f"no {what} environment at {python}; scripts/test creates it"
        log = ROOT / f"{folder}.log"
        if log.exists():  # scripts/test's failed install: the end of pip's output says why
            message += f"; the end of {log.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(python)
