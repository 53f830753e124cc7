"""Build the API app around a loaded model, and serve it. (`stanchat api --with-app` mounts the
Gradio app on this app in stanchat/commands/api.py: this package never imports stanchat/app.)"""

from __future__ import annotations

import logging
import tempfile
from typing import TYPE_CHECKING

from stanchat.api.config import DEFAULT_PORT, ApiConfig
from stanchat.options import LOCALHOST

if TYPE_CHECKING:
    from fastapi import FastAPI

    from stanchat.chat import VideoChat

logger = logging.getLogger(__name__)


def build(chat: "VideoChat", config: ApiConfig) -> "FastAPI":
    """The FastAPI app serving `chat` with `config.engine`. Upload folders that servers killed
    before their shutdown left in the temporary folder are cleared first."""
    from stanchat.api.app import create_app
    from stanchat.api.service import ChatService
    from stanchat.api.uploads import clear_orphans
    from stanchat.engine import create_engine

    cleared = clear_orphans(tempfile.gettempdir())
    if cleared:
        logger.info("removed %d upload folder(s) left by servers that were killed", cleared)
    service = ChatService(chat, create_engine(config.engine, chat.llava, chat.processor, **config.engine_settings()),
                          config)
    app = create_app(service)
    app.router.add_event_handler("shutdown", service.close)
    return app


def serve(app: "FastAPI", host: str = LOCALHOST, port: int = DEFAULT_PORT,
          header_timeout: float = ApiConfig.header_timeout) -> None:
    """Serve until interrupted, each request's headers given `header_timeout` seconds to arrive."""
    import uvicorn

    from stanchat.api.connections import with_header_deadline

    if host not in (LOCALHOST, "localhost", "::1"):
        logger.warning("serving on %s: anyone who can reach this machine can use the model", host)
    uvicorn.run(app, host=host, port=port, log_level="warning", http=with_header_deadline(header_timeout))
