"""`stanchat api` under concurrent clients, on the bundled tiny preset: engines compared in one run.

    python benchmarks/serve.py [--requests 64] [--clients 16] [--engines one batched vllm]

Measured in one run, over loopback: requests/s and p50/p95 latency of `--clients` concurrent
clients sending `--requests` chat completions (the example video as a data URL, greedy, the same
question, so every request after the first reuses the encoded video) to a server running the
transformers engine one request at a time (`--max-batch 1`), the same engine batched
(`--max-batch 8`), and the vLLM engine (its own process, from .venv-vllm). Then one warm
server's answer against a cold `stanchat ask` in a fresh process (imports and model load count).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, parser, run  # noqa: E402
from benchmarks.results import Figure, Result  # noqa: E402

QUESTION = "What happens in this video?"
ENGINES = {"one": "transformers, one at a time", "batched": "transformers, batched (8)", "vllm": "vLLM"}
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--video", default=str(ROOT / "examples" / "blue-triangle-left.mp4"))
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    p.add_argument("--vllm-python", default=str(VLLM_PYTHON), help="python of an environment with vLLM")
    return p


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(base: str, body: bytes) -> float:
    start = time.perf_counter()
    request = urllib.request.Request(f"{base}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        json.load(response)
    return time.perf_counter() - start


def _wait(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no server at {base} after {timeout:.0f} s")


def load(base: str, body: bytes, args: argparse.Namespace) -> dict:
    """requests/s, p50 and p95 seconds of `requests` posts from `clients` threads (after one warm-up)."""
    _post(base, body)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        latencies = sorted(pool.map(lambda _: _post(base, body), range(args.requests)))
    wall = time.perf_counter() - start
    return {"rps": args.requests / wall, "p50": statistics.median(latencies),
            "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], "wall": wall}


def in_process(chat, max_batch: int, body: bytes, args: argparse.Namespace) -> tuple[dict, float]:
    """Load figures of an in-process transformers server, and one warm answer's seconds."""
    import uvicorn

    from stanchat.api.config import ApiConfig
    from stanchat.api.server import build

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(build(chat, ApiConfig(max_batch=max_batch, max_pending=256)),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base, 60)
        figures = load(base, body, args)
        warm = min(_post(base, body) for _ in range(3))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return figures, warm


def vllm(body: bytes, args: argparse.Namespace) -> dict:
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([args.vllm_python, "-m", "stanchat", "api", "--engine", "vllm", "--model", "tiny",
                                "--device", "cpu", "--port", str(port), "--max-pending", "256"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(f"http://127.0.0.1:{port}", 600)
        return load(f"http://127.0.0.1:{port}", body, args)
    finally:
        process.terminate()
        process.wait(timeout=60)


def cold_ask(args: argparse.Namespace) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stanchat", "ask", args.video, QUESTION, "--model", "tiny", "--device",
                    "cpu", "--max-new-tokens", str(args.max_tokens), "--json"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - start


def measure(args: argparse.Namespace) -> Result:
    import torch

    import stanchat

    chat = stanchat.load("tiny", device="cpu")
    url = "data:video/mp4;base64," + base64.b64encode(Path(args.video).read_bytes()).decode()
    body = json.dumps({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                                 {"type": "text", "text": QUESTION}]}],
                       "max_tokens": args.max_tokens, "temperature": 0}).encode()
    rows, warm = {}, None
    for engine in args.engines:
        if engine == "vllm":
            if not Path(args.vllm_python).exists():
                continue  # no vLLM environment: its row is left out, the page says which ran
            rows[engine] = vllm(body, args)
        else:
            rows[engine], seconds = in_process(chat, 1 if engine == "one" else 8, body, args)
            warm = seconds if warm is None else min(warm, seconds)
    cold = cold_ask(args)
    result = Result("serve", "`stanchat api` under concurrent clients (tiny preset)",
                    data={"rows": rows, "warm": warm, "cold": cold},
                    setup=f"{args.requests} requests from {args.clients} clients over loopback, "
                          f"{Path(args.video).name}, {args.max_tokens} tokens at most, greedy, on "
                          f"{cpu_name(torch.get_num_threads())}; engines run: {', '.join(rows)}")
    for engine, row in rows.items():
        result.figures.append(Figure(f"{ENGINES[engine]}: requests/s", row["rps"], "req/s",
                                     detail=f"p50 {row['p50']:.3f} s, p95 {row['p95']:.3f} s"))
    base = rows.get("one")
    for engine in ("batched", "vllm"):
        if base and engine in rows:
            result.figures.append(Figure(f"{ENGINES[engine]} / one at a time, requests/s",
                                         rows[engine]["rps"] / base["rps"], "x",
                                         detail=f"{rows[engine]['rps']:.2f} vs {base['rps']:.2f} req/s"))
    if warm is not None:
        result.figures.append(Figure("cold `stanchat ask` / warm server answer", cold / warm, "x",
                                     detail=f"{cold:.2f} s vs {warm:.3f} s"))
    return result


def report(result: Result) -> None:
    print(f"stanchat api: {result.setup}")
    print(f"{'engine':<30}{'req/s':>8}{'p50 s':>9}{'p95 s':>9}")
    for engine, row in result.data["rows"].items():
        print(f"{ENGINES[engine]:<30}{row['rps']:>8.2f}{row['p50']:>9.3f}{row['p95']:>9.3f}")
    result.print_figures()


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
