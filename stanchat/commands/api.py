"""Serve an OpenAI-compatible API: POST /v1/chat/completions (streamed or not), GET /v1/models,
GET /health. A video is a content part {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..."}}
(or a path under --allowed-local-media-path, or an http(s) URL from a host of --allowed-media-domains),
or its frames as image_url parts of one message; stanchat's options (frames, temporal, fps, start,
end) and vLLM's media_io_kwargs.video (num_frames, fps) are extra body fields. Binds 127.0.0.1 unless --host says otherwise; --api-key (or
STANCHAT_API_KEY) makes clients send `Authorization: Bearer KEY`. --with-app also serves the
Gradio chat app at /app from the same model, with `stanchat serve`'s limits (the "app" options) and,
with a key, a sign-in page that takes the key as its password. Needs `pip install 'stanchat[api]'`."""

from __future__ import annotations

import argparse
import importlib.util
import logging
from dataclasses import fields
from typing import TYPE_CHECKING

from stanchat.api.config import DEFAULT_PORT, ApiConfig, api_key_from_env, flag
from stanchat.commands._shared import add_model_arguments, load_chat
from stanchat.commands.serve import add_app_arguments, app_limits
from stanchat.errors import StanchatError
from stanchat.options import LOCALHOST

if TYPE_CHECKING:
    from fastapi import FastAPI

    from stanchat.app.config import AppConfig
    from stanchat.chat import VideoChat

logger = logging.getLogger(__name__)

APP_PATH = "/app"  # where --with-app mounts the Gradio chat app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    group = parser.add_argument_group("server")
    group.add_argument("--host", default=LOCALHOST,
                       help=f"address to listen on (default {LOCALHOST}: this machine only)")
    group.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    for setting in fields(ApiConfig):  # each ApiConfig field is a flag; its help and default live there
        group.add_argument(flag(setting.name), type=setting.metadata["kind"], default=setting.default,
                           help=_help(setting.metadata["help"], setting.default), **setting.metadata["flag"])
    group.add_argument("--with-app", action="store_true",
                       help=f"also serve the Gradio chat app at {APP_PATH} on the same model (needs stanchat[demo]); "
                            "with a key, the browser signs in with it as the password")
    add_app_arguments(parser.add_argument_group(f"app (with --with-app: the app at {APP_PATH}, as stanchat serve)"))


def _help(text: str, default) -> str:
    if default is None or "default" in text:
        return text
    return f"{text} (default {default:g})" if isinstance(default, float) else f"{text} (default {default})"


def api_config(args: argparse.Namespace) -> ApiConfig:
    """The ApiConfig of the parsed flags (the key from $STANCHAT_API_KEY when --api-key is not given)."""
    values = {setting.name: getattr(args, setting.name) for setting in fields(ApiConfig)}
    return ApiConfig(**{**values, "api_key": api_key_from_env(args.api_key)})


def build_with_app(chat: "VideoChat", config: ApiConfig, app_config: "AppConfig") -> "FastAPI":
    """The API app with the Gradio chat app mounted at APP_PATH on the same model, with `stanchat serve`'s
    protections and `app_config`'s limits, signed in with `config.api_key` when there is one. Here, in
    the command that serves both, so that the API package never imports the app package."""
    from stanchat.api.server import build
    from stanchat.app.server import mount

    return mount(build(chat, config), chat, app_config, APP_PATH, password=config.api_key)


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
    from stanchat.api import server

    chat = load_chat(args)
    served = build_with_app(chat, config, app) if args.with_app else server.build(chat, config)
    server.serve(served, args.host, args.port, config.header_timeout)
    return 0
