"""Build the API app around a loaded model, optionally with the Gradio app mounted, and serve it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from stanchat.api.config import APP_PATH, LOCALHOST, ApiConfig

if TYPE_CHECKING:
    from fastapi import FastAPI

    from stanchat.app.config import AppConfig
    from stanchat.chat import VideoChat

logger = logging.getLogger(__name__)


def build(chat: "VideoChat", config: ApiConfig, with_app: bool = False,
          app_config: "AppConfig | None" = None) -> "FastAPI":
    """The FastAPI app serving `chat` with `config.engine`; `with_app` mounts the chat UI at APP_PATH with
    `stanchat serve`'s protections and `app_config`'s limits (default: serve's), signed in with
    `config.api_key` when there is one."""
    from stanchat.api.app import create_app
    from stanchat.api.service import ChatService
    from stanchat.engine import create_engine

    service = ChatService(chat, create_engine(config.engine, chat.llava, chat.processor, **config.engine_settings()),
                          config)
    app = create_app(service)
    app.router.add_event_handler("shutdown", service.close)
    if with_app:
        from stanchat.app.config import AppConfig
        from stanchat.app.server import mount

        app = mount(app, chat, app_config or AppConfig(), APP_PATH, password=config.api_key)
    return app


def serve(app: "FastAPI", host: str = LOCALHOST, port: int = 8000) -> None:
    """Serve until interrupted."""
    import uvicorn

    if host not in (LOCALHOST, "localhost", "::1"):
        logger.warning("serving on %s: anyone who can reach this machine can use the model", host)
    uvicorn.run(app, host=host, port=port, log_level="warning")
