"""`stanchat api` under concurrent clients: engines compared in one run.

    python benchmarks/serve.py [--requests 64] [--clients 16] [--engines one batched vllm]
    python benchmarks/serve.py --preset llava-1.5-7b --device cuda   # a GPU: 7B shapes (or its weights)

Measured in one run, over loopback: requests/s and p50/p95 latency of `--clients` concurrent
clients sending `--requests` chat completions (the example video as a data URL, greedy, the same
question, so every request after the first reuses the encoded video) to a server running the
transformers engine one request at a time (`--max-batch 1`), the same engine batched
(`--max-batch 8`), and the vLLM engine (its own process, from .venv-vllm). Then one warm
server's answer against a cold `stanchat ask` in a fresh process (imports and model load count).
The case users meet most, every request about a video the server has not seen, is measured with the
video cache off (`--cache-size 0`: each request decodes and encodes its video, as distinct videos
would): the same engine one at a time against batched, as a ratio in the same run.

`--preset` (default the bundled tiny one) measures that preset: its weights when they are on this
machine, else a random model at its real shapes built by benchmarks/gpu.py (`--toy`: gpu.py's toy
shapes of its family), which speaks through the tiny preset's tokenizer and chat template. vLLM and
the cold `stanchat ask` load a model from disk, so with random weights they are not measured; a row
that is not measured is printed and recorded with its reason.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, parser, run  # noqa: E402
from benchmarks.results import Figure, Result  # noqa: E402
from tests.api_helpers import serve_in_thread, serve_subprocess  # noqa: E402  (as the API tests start servers)

QUESTION = "What happens in this video?"
ENGINES = {"one": "transformers, one at a time", "batched": "transformers, batched (8)", "vllm": "vLLM"}
MISSES = {"one": "one at a time, every video new", "batched": "batched (8), every video new"}  # cache off
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
CONTEXT = 4096  # the LLM's context of a random model (LLaVA-1.5's)
VLLM_START_SECONDS = 600  # vLLM loads the model and compiles before it answers /health


def build_parser() -> argparse.ArgumentParser:
    from stanchat.pretrained import preset_names

    p = parser(__doc__)
    p.add_argument("--preset", default="tiny", choices=preset_names(),
                   help="the model: its weights when on this machine, else random at its real shapes (default tiny)")
    p.add_argument("--toy", action="store_true", help="with random weights: toy shapes of the preset's family")
    p.add_argument("--device", default=None, help="cpu or cuda (default: as stanchat chooses)")
    p.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                   help="default: float16 on a GPU, float32 on the CPU (as stanchat chooses)")
    p.add_argument("--video", default=str(ROOT / "examples" / "blue-triangle-left.mp4"))
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    p.add_argument("--vllm-python", default=str(VLLM_PYTHON), help="python of an environment with vLLM")
    return p


def _post(base: str, body: bytes) -> float:
    start = time.perf_counter()
    request = urllib.request.Request(f"{base}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        json.load(response)
    return time.perf_counter() - start


def load(base: str, body: bytes, args: argparse.Namespace) -> dict:
    """requests/s, p50 and p95 seconds of `requests` posts from `clients` threads (after one warm-up)."""
    _post(base, body)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        latencies = sorted(pool.map(lambda _: _post(base, body), range(args.requests)))
    wall = time.perf_counter() - start
    return {"rps": args.requests / wall, "p50": statistics.median(latencies),
            "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], "wall": wall}


def in_process(chat, max_batch: int, body: bytes, args: argparse.Namespace, cache_size: int = 32) -> tuple[dict, float]:
    """Load figures of an in-process transformers server, and one warm answer's seconds."""
    from stanchat.api.config import ApiConfig
    from stanchat.api.server import build

    config = ApiConfig(max_batch=max_batch, max_pending=256, cache_size=cache_size)
    with serve_in_thread(build(chat, config)) as base:
        figures = load(base, body, args)
        warm = min(_post(base, body) for _ in range(3))
    return figures, warm


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def _model_args(args: argparse.Namespace) -> list[str]:
    """The `stanchat` options that load the measured model in another process."""
    return ["--model", args.preset] + (["--device", args.device] if args.device else []) + (
        ["--dtype", args.dtype] if args.dtype else [])


def vllm(body: bytes, args: argparse.Namespace) -> dict:
    """Load figures of `stanchat api --engine vllm` in its own process; a server that exits before it
    answers /health fails at once with its log's tail."""
    server_args = ["--engine", "vllm", *_model_args(args), "--max-pending", "256"]
    with tempfile.TemporaryDirectory(prefix="stanchat-serve-bench-") as folder:
        log = Path(folder) / "server.log"
        with serve_subprocess(args.vllm_python, server_args, VLLM_START_SECONDS, log) as (base, _):
            return load(base, body, args)


def cold_ask(args: argparse.Namespace) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stanchat", "ask", args.video, QUESTION, *_model_args(args),
                    "--max-new-tokens", str(args.max_tokens), "--json"], cwd=ROOT, env=_env(), check=True,
                   capture_output=True)
    return time.perf_counter() - start


@dataclass
class _Grafted:
    """What `VideoChat` takes from a VideoCLIP: the STAN it grafts (here gpu.py's random one)."""

    stan: object


def random_chat(args: argparse.Namespace, device, dtype):
    """A `VideoChat` at --preset's real shapes (gpu.py's `bench_shape`, `build`) with random weights;
    the tiny preset's tokenizer and chat template, its image processor resized to the tower."""
    from transformers import AutoProcessor, CLIPImageProcessor

    from benchmarks.gpu import bench_shape, build
    from stanchat.chat import VideoChat
    from stanchat.pretrained import resolve

    processor = AutoProcessor.from_pretrained(resolve("tiny", None, None).llava)
    side = bench_shape(args).image_size
    sized = {"size": {"shortest_edge": side}, "crop_size": {"height": side, "width": side}}
    processor.image_processor = CLIPImageProcessor.from_dict({**processor.image_processor.to_dict(), **sized})
    shape = replace(bench_shape(args), image_token=processor.image_token_id)  # the tiny tokenizer's <image>
    graft = build(shape, "dense", device, dtype, max_frames=64, context=CONTEXT)
    return VideoChat(graft.llava, processor, _Grafted(graft.stan), f"{args.preset} (random weights)")


def weights_here(preset: str) -> bool:
    from stanchat.commands.models import status

    entry = status(preset)
    return entry["stan_present"] and entry["llava_present"]


def load_model(args: argparse.Namespace):
    """(the VideoChat measured, which weights: "bundled", "real" or "random")."""
    import stanchat
    from stanchat.chat import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.preset == "tiny":
        return stanchat.load("tiny", device=device, dtype=dtype), "bundled"
    if weights_here(args.preset) and not args.toy:
        return stanchat.load(args.preset, device=device, dtype=dtype), "real"
    return random_chat(args, device, dtype), "random"


def in_process_rows(args: argparse.Namespace, body: bytes) -> tuple[dict, float | None, str, str]:
    """The transformers rows, the best warm answer's seconds, which weights, and the GPU's name ("" on
    the CPU); the model is let go (the GPU's cache emptied) before this returns, so vLLM can have the GPU."""
    import torch

    chat, weights = load_model(args)
    device = chat.vision_device
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    rows, warm = {}, None
    for engine in [e for e in args.engines if e != "vllm"]:
        rows[engine], seconds = in_process(chat, 1 if engine == "one" else 8, body, args)
        warm = seconds if warm is None else min(warm, seconds)
    for engine in [e for e in args.engines if e in MISSES]:
        rows[f"{engine}-miss"], _ = in_process(chat, 1 if engine == "one" else 8, body, args, cache_size=0)
    llava = weakref.ref(chat.llava)
    del chat
    gc.collect()  # the dropped apps hold reference cycles
    if llava() is not None:
        raise RuntimeError("the transformers engines' model is still referenced; vLLM would start beside it")
    if gpu:
        torch.cuda.empty_cache()
    return rows, warm, weights, gpu


def not_measured(args: argparse.Namespace, weights: str) -> dict[str, str]:
    """The rows that cannot be measured here -> why."""
    skipped = {}
    if "vllm" in args.engines:
        if weights == "random":
            skipped["vllm"] = "random weights live in this process only, and vLLM loads a model from disk"
        elif not Path(args.vllm_python).exists():
            skipped["vllm"] = f"no vLLM environment at {args.vllm_python} (scripts/test makes .venv-vllm)"
    if weights == "random":
        skipped["cold"] = "it loads the preset's weights, which are not on this machine"
    return skipped


def measure(args: argparse.Namespace) -> Result:
    url = "data:video/mp4;base64," + base64.b64encode(Path(args.video).read_bytes()).decode()
    body = json.dumps({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                                 {"type": "text", "text": QUESTION}]}],
                       "max_tokens": args.max_tokens, "temperature": 0}).encode()
    import torch

    rows, warm, weights, gpu = in_process_rows(args, body)
    skipped = not_measured(args, weights)
    if "vllm" in args.engines and "vllm" not in skipped:
        rows["vllm"] = vllm(body, args)
    cold = None if "cold" in skipped else cold_ask(args)
    model = f"{args.preset} preset" + (", toy shapes" if args.toy and weights == "random" else "")
    result = Result("serve", f"`stanchat api` under concurrent clients ({model})",
                    data={"rows": rows, "warm": warm, "cold": cold, "not_measured": skipped, "weights": weights},
                    setup=f"{model}, {weights} weights, {args.requests} requests from {args.clients} clients over "
                          f"loopback, {Path(args.video).name}, {args.max_tokens} tokens at most, greedy, on "
                          f"{gpu or cpu_name(torch.get_num_threads())}; "
                          f"engines run: {', '.join(rows)}")
    result.notes += [f"{ENGINES.get(key, 'cold `stanchat ask`')}: not measured ({why})" for key, why in skipped.items()]
    figures(result, gpu)
    return result


def figures(result: Result, device: str) -> None:
    rows, warm, cold = result.data["rows"], result.data["warm"], result.data["cold"]
    for engine, row in rows.items():
        result.figures.append(Figure(f"{label(engine)}: requests/s", row["rps"], "req/s", device=device,
                                     detail=f"p50 {row['p50']:.3f} s, p95 {row['p95']:.3f} s"))
    base = rows.get("one")
    for engine in ("batched", "vllm"):
        if base and engine in rows:
            result.figures.append(Figure(f"{ENGINES[engine]} / one at a time, requests/s",
                                         rows[engine]["rps"] / base["rps"], "x",
                                         detail=f"{rows[engine]['rps']:.2f} vs {base['rps']:.2f} req/s"))
    if "one-miss" in rows and "batched-miss" in rows:
        one, batched = rows["one-miss"]["rps"], rows["batched-miss"]["rps"]
        result.figures.append(Figure("every video new: batched / one at a time, requests/s", batched / one, "x",
                                     detail=f"{batched:.2f} vs {one:.2f} req/s, video cache off"))
    if warm is not None and cold is not None:
        result.figures.append(Figure("cold `stanchat ask` / warm server answer", cold / warm, "x",
                                     detail=f"{cold:.2f} s vs {warm:.3f} s"))


def label(row: str) -> str:
    """A row's name: an engine, or "<engine>-miss" for the video cache off."""
    return MISSES[row[:-5]] if row.endswith("-miss") else ENGINES[row]


def report(result: Result) -> None:
    print(f"stanchat api: {result.setup}")
    print(f"{'engine':<30}{'req/s':>8}{'p50 s':>9}{'p95 s':>9}")
    for engine, row in result.data["rows"].items():
        print(f"{label(engine):<30}{row['rps']:>8.2f}{row['p50']:>9.3f}{row['p95']:>9.3f}")
    for key, why in result.data["not_measured"].items():
        print(f"{ENGINES.get(key, 'cold stanchat ask'):<30} not measured: {why}")
    result.print_figures()


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
