"""Serve a `build_app` result: `launch` on its own port, or `mount` inside another FastAPI app
(`stanchat api --with-app`). Both give it the same protections:

bind 127.0.0.1 (only this machine can connect) unless a host is given, no public share link unless
asked, uploads in a private folder and under a size limit, the conversations kept in memory capped,
one model call at a time with a bounded queue, no Python error text on the page, no analytics, SSR
or MCP server, and a theme on system fonts, so that the page itself makes no request beyond this
server. Gradio's own banner is never printed (its hint names `launch(share=True)`); `launch`
prints the app's address with the hint worded for `stanchat serve`.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import gradio as gr

from stanchat.app.config import DEFAULT_PORT, AppConfig, parse_size
from stanchat.app.ui import COMMIT_ON_ENTER, build_app
from stanchat.errors import StanchatError
from stanchat.options import LOCALHOST

if TYPE_CHECKING:
    from fastapi import FastAPI

    from stanchat.chat import VideoChat

logger = logging.getLogger(__name__)

SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "sans-serif")
MONO_FONTS = ("ui-monospace", "monospace")
# the strip: thumbnails smaller than gradio's 100 px minimum, so that eight fit in a row
CSS = """
#frames .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(56px, 1fr)) !important;
                          grid-template-rows: none !important; grid-auto-rows: auto !important; }
#header h2 { margin-bottom: 0; }
"""
# Enter in a slider's number box: leave the box, which is when Gradio sends the typed value (release)
JS = f"""() => {{
  document.addEventListener("keydown", (event) => {{
    if (event.key === "Enter" && event.target.matches(".{COMMIT_ON_ENTER} input[type=number]")) event.target.blur();
  }});
}}"""
SHARE_HINT = "add --share (`stanchat serve --share`) for a public gradio.live link"
SIGN_IN = "Sign in with the server's API key as the password (any user name)."


def theme() -> gr.themes.Base:
    """Gradio's default look on the system's fonts (no font download from the internet)."""
    return gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(MONO_FONTS))


@contextlib.contextmanager
def private_upload_folder() -> Iterator[str]:
    """A folder of this server's own (mode 0700, removed afterwards) for Gradio's uploads and
    cache, set as GRADIO_TEMP_DIR while the app is built and served. Gradio serves every file in
    its upload folder; its default, /tmp/gradio, is shared by every Gradio app on the machine, so
    without this a stanchat server would hand out other apps' uploads (and they ours)."""
    before = os.environ.get("GRADIO_TEMP_DIR")
    folder = tempfile.mkdtemp(prefix="stanchat-gradio-")  # mkdtemp makes it 0700
    os.environ["GRADIO_TEMP_DIR"] = folder
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before
        shutil.rmtree(folder, ignore_errors=True)


def protect(app: gr.Blocks, config: AppConfig) -> dict[str, Any]:
    """Queue `app` within the limits of `config`; returns what `launch` and `mount` both pass Gradio."""
    app.queue(max_size=config.queue_size, default_concurrency_limit=config.concurrency, api_open=False)
    app.state_session_capacity = config.max_sessions  # conversations kept, each with its video; oldest dropped
    return dict(max_file_size=parse_size(config.max_file_size),
                allowed_paths=list(config.examples),  # the files themselves: never their folders
                show_error=False, ssr_mode=False, mcp_server=False, enable_monitoring=False,
                theme=theme(), css=CSS, js=JS)


def launch(app: gr.Blocks, config: AppConfig, host: str = LOCALHOST, port: int = DEFAULT_PORT,
           share: bool = False, block: bool = True, quiet: bool = False) -> str:
    """Queue and serve `app`; returns the local URL. Prints where it is served unless `quiet`.
    `block=False` returns at once (tests; close with `app.close()`), `block=True` serves until
    interrupted (Ctrl-C reaches the caller)."""
    if host not in (LOCALHOST, "localhost", "::1"):
        logger.warning("serving on %s: anyone who can reach this machine can use the model", host)
    settings = protect(app, config)
    try:
        _, url, share_url = app.launch(
            server_name=host, server_port=port or _free_port(host), share=share, prevent_thread_lock=True,
            state_session_capacity=config.max_sessions, quiet=True, **settings,
        )
    except OSError as err:
        raise StanchatError(f"cannot serve on {host}:{port} ({err}); pass another --port or --host") from err
    if not quiet:
        print(address(url, share, share_url), flush=True)
    if block:
        try:
            while app.is_running:
                time.sleep(0.1)
        finally:
            app.close()
    return url


def address(url: str, share: bool, share_url: str | None) -> str:
    """What `stanchat serve` prints once the app is up."""
    lines = [f"stanchat app on {url}"]
    if share_url:
        lines.append(f"public link: {share_url} (anyone who has it can use the model)")
    elif share:
        lines.append("no public link could be made (see above); the app is served on the address above only")
    else:
        lines.append(f"({SHARE_HINT})")
    return "\n".join(lines)


def mount(parent: "FastAPI", chat: "VideoChat", config: AppConfig, path: str, password: str | None = None) -> "FastAPI":
    """Build the app for `chat` and mount it on `parent` at `path`, with `launch`'s protections: its
    uploads in a private folder for the server's life (removed at shutdown), the same limits and
    queue. With `password` (the API's key), the browser signs in with it (Gradio's login page;
    every page, upload, file and event under `path` answers 401 before that)."""
    folder = contextlib.ExitStack()
    folder.enter_context(private_upload_folder())  # GRADIO_TEMP_DIR is read while serving too
    parent.router.add_event_handler("shutdown", folder.close)
    app = build_app(chat, config)
    settings = protect(app, config)
    if password is not None:
        settings.update(auth=lambda _user, given: hmac.compare_digest(given.encode(), password.encode()),
                        auth_message=SIGN_IN)
    return gr.mount_gradio_app(parent, app, path=path, **settings)


def _free_port(host: str) -> int:
    """A port nobody listens on now (the OS picks it)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
