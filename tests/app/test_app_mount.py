"""`stanchat api --with-app`: the chat app mounted at /app has `stanchat serve`'s protections
(private upload folder, upload size limit, session cap, bounded queue, examples, no Python error
text) and, with --api-key, asks for the key before anything under /app answers."""

import os
import shutil
import stat
from contextlib import closing
from pathlib import Path

import pytest

pytest.importorskip("gradio")
pytest.importorskip("fastapi")

import httpx  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from stanchat.api.config import ApiConfig  # noqa: E402
from stanchat.app.config import AppConfig  # noqa: E402
from stanchat.cli import main  # noqa: E402
from stanchat.commands.api import APP_PATH, build_with_app  # noqa: E402
from tests.api_helpers import serve_in_thread  # noqa: E402
from tests.tiny_app import app_models, chat, load_outputs  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

KEY = "sk-app-test"
FRAMES = 4


@pytest.fixture
def example(app_models, tmp_path):
    """An example video beside a sibling that must not be served."""
    folder = tmp_path / "examples"
    folder.mkdir()
    (folder / "notes.txt").write_text("a sibling")
    return Path(shutil.copy(app_models["video"], folder / "example.mp4"))


def _blocks(app):
    """The Gradio app mounted at /app."""
    (mounted,) = [route.app for route in app.routes if getattr(route, "path", None) == APP_PATH]
    return mounted.get_blocks()


def test_the_mounted_app_has_the_serve_protections(chat, app_models, example, tmp_path):
    before = os.environ.get("GRADIO_TEMP_DIR")
    config = AppConfig(frames=FRAMES, max_file_size="100KB", max_sessions=2, queue_size=3, examples=(str(example),))
    app = build_with_app(chat, ApiConfig(), config)
    folder = Path(os.environ["GRADIO_TEMP_DIR"])
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 200_000)
    with serve_in_thread(app, graceful_seconds=1) as base:
        with closing(Client(f"{base}/app/", verbose=False, download_files=False)) as client:  # its heartbeat
            opened = load_outputs(client, app_models["video"], FRAMES)
            uploaded = list(folder.rglob("clip.mp4"))  # stream would hold the server's shutdown
            with pytest.raises(Exception, match="(?i)size|large|413"):
                client.predict(handle_file(str(big)), FRAMES, "stan", api_name="/load_video")
        served = {path.name: httpx.get(f"{base}/app/gradio_api/file={path}").status_code
                  for path in (example, example.parent / "notes.txt")}
    blocks = _blocks(app)
    assert folder.name.startswith("stanchat-gradio-") and len(uploaded) == 1  # not the shared /tmp/gradio
    assert opened["frames"] == FRAMES and len(opened["strip"]["value"]) == FRAMES  # the app works there
    assert served["example.mp4"] == 200 and served["notes.txt"] in (403, 404)
    assert (blocks.state_session_capacity, blocks._queue.max_size, blocks.max_file_size) == (2, 3, 100 << 10)
    assert blocks.show_error is False and not blocks.ssr_mode and blocks.api_open is False
    assert any(c["type"] == "dataset" for c in blocks.get_config_file()["components"])  # the examples
    # at shutdown the private folder goes, and Gradio's folder setting is what it was
    assert not folder.exists() and os.environ.get("GRADIO_TEMP_DIR") == before


def test_with_an_api_key_the_app_asks_for_it(chat, app_models, example):
    app = build_with_app(chat, ApiConfig(api_key=KEY), AppConfig(examples=(str(example),)))
    with serve_in_thread(app, graceful_seconds=1) as base:
        anonymous = {path: httpx.get(f"{base}/app/{path}").status_code
                     for path in ("config", "gradio_api/info", f"gradio_api/file={example}")}
        upload = httpx.post(f"{base}/app/gradio_api/upload", files={"files": ("x.mp4", b"x")}).status_code
        page = httpx.get(f"{base}/app/").text
        with pytest.raises(Exception):
            Client(f"{base}/app/", auth=("anyone", "wrong key"), verbose=False)
        with closing(Client(f"{base}/app/", auth=("anyone", KEY), verbose=False, download_files=False)) as client:
            frames = load_outputs(client, app_models["video"], FRAMES)["frames"]
        api = httpx.get(f"{base}/v1/models").status_code
    assert set(anonymous.values()) == {401} and upload == 401
    assert "auth_required" in page  # the sign-in page (Gradio still lists its endpoints' names there)
    assert frames == FRAMES and api == 401  # signed in, the app works; the API still wants the bearer key


def test_api_with_app_takes_the_serve_options_and_checks_them_before_loading(chat, app_models, capsys, monkeypatch):
    for argv, says in ((["--max-sessions", "0"], "--max-sessions must be at least 1"),
                       (["--max-file-size", "lots"], "--max-file-size 'lots' is not a size"),
                       (["--examples", "/nonexistent"], "no such file or folder"),
                       (["--max-frame-pixels", "0"], "--max-frame-pixels must be at least 1, got 0"),
                       (["--engine", "vllm"], "--with-app needs the transformers engine")):
        assert main(["api", "--with-app", *argv, "--llava", "/nonexistent", "--stan", app_models["stan"]]) == 2
        assert says in capsys.readouterr().err
    built = []
    monkeypatch.setattr("stanchat.commands.api.build_with_app", lambda chat, config, app: built.append(app))
    monkeypatch.setattr("stanchat.api.server.serve", lambda *args: None)
    assert main(["api", "--with-app", "--max-sessions", "5", "--queue-size", "2", "--max-frame-pixels", "1000",
                 "--llava", app_models["llava"], "--stan", app_models["stan"], "--device", "cpu"]) == 0
    (app_config,) = built
    assert (app_config.max_sessions, app_config.queue_size, app_config.max_frame_pixels) == (5, 2, 1000)


def test_the_private_folder_is_private(chat):
    app = build_with_app(chat, ApiConfig(), AppConfig())
    folder = os.environ["GRADIO_TEMP_DIR"]
    with serve_in_thread(app, graceful_seconds=1):
        mode = stat.S_IMODE(os.stat(folder).st_mode)
    assert mode == 0o700 and _blocks(app).GRADIO_CACHE == folder
