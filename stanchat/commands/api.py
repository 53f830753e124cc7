"""Serve an OpenAI-compatible API: POST /v1/chat/completions (streamed or not), GET /v1/models,
GET /health. A video is a content part {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..."}}
(or a path under --allowed-local-media-path); stanchat's options (frames, temporal, fps, start,
end) are extra body fields. Binds 127.0.0.1 unless --host says otherwise; --api-key (or
STANCHAT_API_KEY) makes clients send `Authorization: Bearer KEY`. --with-app also serves the
Gradio chat app at /app from the same model, with `stanchat serve`'s limits (the "app" options) and,
with a key, a sign-in page that takes the key as its password. Needs `pip install 'stanchat[api]'`."""

from __future__ import annotations

import argparse
import importlib.util
import logging

from stanchat.api.config import (API_KEY_ENV, APP_PATH, CPU_KV_CACHE_GIB, DEFAULT_PORT, ENGINES, LOCALHOST,
                                 ApiConfig, api_key_from_env)
from stanchat.commands._shared import add_model_arguments, load_chat
from stanchat.commands.serve import add_app_arguments, app_limits
from stanchat.errors import StanchatError

logger = logging.getLogger(__name__)

API = ApiConfig()  # the defaults, shown in --help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    group = parser.add_argument_group("server")
    group.add_argument("--host", default=LOCALHOST,
                       help=f"address to listen on (default {LOCALHOST}: this machine only)")
    group.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    group.add_argument("--engine", choices=ENGINES, default=API.engine,
                       help="transformers: batched generate in this process (default); vllm: vLLM's LLaVA "
                            "(pip install 'stanchat[vllm]')")
    group.add_argument("--tensor-parallel-size", type=int, default=API.tensor_parallel_size,
                       help="GPUs vLLM splits the LLM over (--engine vllm)")
    group.add_argument("--kv-cache-gib", type=float, default=API.kv_cache_gib, metavar="GIB",
                       help="memory vLLM reserves for its KV cache (--engine vllm; default: vLLM's choice on a GPU, "
                            f"{CPU_KV_CACHE_GIB:g} on the CPU)")
    group.add_argument("--gpu-memory-utilization", type=float, default=API.gpu_memory_utilization, metavar="FRACTION",
                       help="share of the GPU's memory vLLM may fill, 0-1 (--engine vllm; default: vLLM's, 0.9); "
                            "leave room for the tower and STAN, which run in this process")
    group.add_argument("--api-key", default=None,
                       help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV} if set, else no key)")
    group.add_argument("--allowed-local-media-path", default=None, metavar="DIR",
                       help="let requests name files under DIR by path or file:// URL (default: none)")
    group.add_argument("--max-request-bytes", type=int, default=API.max_request_bytes,
                       help=f"largest request body (default {API.max_request_bytes}); more gets 413")
    group.add_argument("--max-video-seconds", type=float, default=API.max_video_seconds,
                       help=f"longest video accepted (default {API.max_video_seconds:g})")
    group.add_argument("--max-pending", type=int, default=API.max_pending,
                       help=f"requests in the server at once, waiting or running (default {API.max_pending}); "
                            "more get 429")
    group.add_argument("--max-batch", type=int, default=API.max_batch,
                       help=f"requests batched into one generate (transformers engine; default {API.max_batch}, "
                            "1: one at a time)")
    group.add_argument("--batch-wait-ms", type=float, default=API.batch_wait_ms,
                       help=f"how long a batch waits for more requests (default {API.batch_wait_ms:g})")
    group.add_argument("--cache-size", type=int, default=API.cache_size,
                       help=f"encoded videos kept for follow-up questions (default {API.cache_size})")
    group.add_argument("--with-app", action="store_true",
                       help=f"also serve the Gradio chat app at {APP_PATH} on the same model (needs stanchat[demo]); "
                            "with a key, the browser signs in with it as the password")
    add_app_arguments(parser.add_argument_group(f"app (with --with-app: the app at {APP_PATH}, as stanchat serve)"))


def api_config(args: argparse.Namespace) -> ApiConfig:
    return ApiConfig(engine=args.engine, api_key=api_key_from_env(args.api_key),
                     allowed_local_media_path=args.allowed_local_media_path, max_request_bytes=args.max_request_bytes,
                     max_video_seconds=args.max_video_seconds, max_pending=args.max_pending,
                     max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, cache_size=args.cache_size,
                     tensor_parallel_size=args.tensor_parallel_size, kv_cache_gib=args.kv_cache_gib,
                     gpu_memory_utilization=args.gpu_memory_utilization)


def run(args: argparse.Namespace) -> int:
    config = api_config(args)
    app = None
    if args.with_app:
        from stanchat.app.config import AppConfig

        app = AppConfig(**app_limits(args))  # checked before the model loads, as in stanchat serve
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise StanchatError(f"stanchat api needs {' and '.join(missing)}: pip install 'stanchat[api]'")
    if args.with_app and importlib.util.find_spec("gradio") is None:
        raise StanchatError("--with-app needs gradio: pip install 'stanchat[demo]'")
    if not 0 <= args.port <= 65535:
        raise StanchatError(f"--port must be 0..65535, got {args.port}")
    if config.engine == "vllm" and args.with_app:  # the app answers from this process's LLM, which vLLM then holds
        raise StanchatError("--with-app needs the transformers engine (with --engine vllm the LLM lives in vLLM); "
                            "drop --with-app and run the app beside it with stanchat serve, or leave out --engine vllm")
    if config.engine == "vllm":
        from stanchat.engine.vllm import check_available

        check_available()  # one line naming what is missing, before the model loads
        if args.load_4bit or args.load_8bit:
            raise StanchatError("--engine vllm runs the LLM in vLLM, which does not take --load-4bit/--load-8bit; "
                                "leave them out")
    from stanchat.api.server import build, serve

    serve(build(load_chat(args), config, with_app=args.with_app, app_config=app), args.host, args.port)
    return 0
