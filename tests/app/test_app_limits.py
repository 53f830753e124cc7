"""`stanchat serve` against absurd and faulty videos, as test_api_faults.py checks `stanchat api`: a
4000x4000 clip is shown and answered without the app or its decode worker holding full-size frames,
frames over --max-frame-pixels and a decode worker killed mid-video are a message in the chat, and
the app lives on. (Uploads over --max-file-size: tests/app/test_app.py.) The app runs in this process."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

gr = pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from stanchat.app.config import AppConfig  # noqa: E402
from stanchat.app.conversation import WARNING  # noqa: E402
from stanchat.cli import main  # noqa: E402
from stanchat.options import MAX_FRAME_PIXELS  # noqa: E402
from tests.api_helpers import busy_worker, peak_rss  # noqa: E402
from tests.big_clips import repeat, write_big_clip  # noqa: E402
from tests.tiny_app import app_models, chat, client, launched, load_outputs, texts  # noqa: E402,F401  (fixtures)

pytestmark = [pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*"),
              pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")]

FRAMES = 16
CONFIG = AppConfig(frames=FRAMES, max_new_tokens=6, max_file_size="4MB")  # the default frame-size ceiling
PEAK_RSS = 1.5 * 2**30  # bytes a decode worker may hold at most, whatever the video
FULL_SIZE = 16 * 4000 * 4000 * 3  # 16 frames of 4000x4000 as RGB: 768 MB


@pytest.fixture(scope="module")
def url(chat):
    yield from launched(chat, CONFIG)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("big")
    big = write_big_clip(folder / "big.mp4", 4000, 4000)
    return {"big": str(big), "huge": str(write_big_clip(folder / "huge.mp4", 6000, 6000, frames=1)),
            "slow": str(repeat(big, folder / "slow.mp4", copies=4))}


def _workers() -> list[int]:
    import psutil

    return [child.pid for child in psutil.Process().children(recursive=True)]


def test_a_4000x4000_clip_is_shown_and_answered_in_bounded_memory(client, clips):
    before = peak_rss(os.getpid())
    out = load_outputs(client, clips["big"], FRAMES)
    assert texts(out["messages"]) == [] and len(out["strip"]["value"]) == FRAMES
    assert peak_rss(os.getpid()) - before < FULL_SIZE / 4  # the app never held the frames at full size
    assert _workers() and max(peak_rss(pid) for pid in _workers()) < PEAK_RSS
    messages, *_ = client.predict("What moves?", 6, 0.0, api_name="/ask")
    assert texts(messages)[-1][0] == "assistant" and not texts(messages)[-1][1].startswith(WARNING)


def test_frames_over_the_ceiling_are_a_message_in_the_chat(client, clips, app_models):
    out = load_outputs(client, clips["huge"], FRAMES)
    (role, text), = texts(out["messages"])
    assert role == "assistant" and text.startswith(WARNING) and "huge.mp4 has 6000x6000 frames" in text
    assert f"{MAX_FRAME_PIXELS:,} pixels" in text and "--max-frame-pixels" in text and "/tmp/gradio" not in text
    assert not out["strip"]["value"]
    assert len(load_outputs(client, app_models["video"], FRAMES)["strip"]["value"]) == FRAMES  # the app lives on


def test_a_decode_worker_killed_mid_video_is_a_message_in_the_chat(client, clips, app_models):
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        killed = pool.submit(_kill, stop)
        out = load_outputs(client, clips["slow"], FRAMES)
        stop.set()
        assert killed.result()
    (role, text), = texts(out["messages"])
    assert role == "assistant" and text.startswith(WARNING) and "decode worker was killed" in text, text
    assert len(load_outputs(client, app_models["video"], FRAMES)["strip"]["value"]) == FRAMES  # a fresh worker


def _kill(stop: threading.Event) -> bool:
    """SIGKILL the first decode worker seen working, as the out-of-memory killer would."""
    worker = busy_worker(os.getpid(), stop)
    if worker is not None:
        os.kill(worker, signal.SIGKILL)
    return worker is not None


def test_serve_takes_the_frame_size_ceiling_and_checks_it_before_loading(monkeypatch, app_models, capsys):
    configs = []
    monkeypatch.setattr("stanchat.app.server.launch", lambda app, config, **kw: configs.append(config))
    model = ["--llava", app_models["llava"], "--stan", app_models["stan"], "--device", "cpu"]
    assert main(["serve", *model]) == 0 and main(["serve", *model, "--max-frame-pixels", "1000"]) == 0
    assert [config.max_frame_pixels for config in configs] == [MAX_FRAME_PIXELS, 1000]
    assert main(["serve", "--max-frame-pixels", "0", "--llava", "/nonexistent", "--stan", app_models["stan"]]) == 2
    assert "--max-frame-pixels must be at least 1, got 0" in capsys.readouterr().err
