"""The app's controls and words: values out of a control's range are clamped, sent back and
explained; messages name the app's controls, not the command line's flags; GIFs and still images
upload like videos; the frame-weight plot lives in the Chat tab; the address line names --share.
Driven over HTTP with gradio_client, as tests/app/test_app.py does, on the tiny models of tests/tiny_app."""

import re
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from gradio_client import Client  # noqa: E402

from stanchat.app.config import AppConfig  # noqa: E402
from stanchat.app.conversation import WARNING  # noqa: E402
from stanchat.app.server import launch  # noqa: E402
from stanchat.app.ui import build_app  # noqa: E402
from stanchat.app.wording import CONTROLS, for_the_app  # noqa: E402
from stanchat.chat import load  # noqa: E402
from stanchat.errors import StanchatError  # noqa: E402
from tests.tiny_app import app_models, chat, client, launched, load_outputs, moving_gif, texts  # noqa: E402,F401
from tests.tiny_llava import save_tiny_llava  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

FRAMES = 5
MAX_FRAMES = 64  # the tiny STAN's temporal embedding
CONFIG = AppConfig(frames=FRAMES, max_new_tokens=10, max_duration=5.0, queue_size=4)
FLAGS = re.compile(r"--[a-z]")  # a command-line flag
# one encoder each container the upload box offers takes (PyAV's wheels carry them all)
VIDEO_ENCODERS = {".mp4": "mpeg4", ".avi": "mpeg4", ".mkv": "mpeg4", ".mov": "mpeg4", ".m4v": "mpeg4",
                  ".webm": "libvpx", ".mpg": "mpeg1video", ".flv": "flv"}


@pytest.fixture(scope="module")
def url(chat):
    yield from launched(chat, CONFIG)


def test_a_frame_count_past_the_maximum_is_clamped_sent_back_and_explained(client, app_models):
    out = load_outputs(client, app_models["video"], frames=999)
    assert out["frames"] == MAX_FRAMES and len(out["strip"]["value"]) == MAX_FRAMES
    assert (f"{WARNING}Frames sampled: 999 is more than the maximum, {MAX_FRAMES} (what STAN's temporal "
            f"embedding covers); {MAX_FRAMES} is used.") in out["info"]
    assert f"{MAX_FRAMES} frames →" in out["info"] and out["messages"] == []
    frames, strip, _, info = client.predict(0, "stan", api_name="/settings")  # the frame box, committed
    assert frames == 1 and len(strip["value"]) == 1 and "Frames sampled: 0 is less than the minimum, 1" in info
    frames, strip, _, info = client.predict(3, "stan", api_name="/settings")
    assert frames == 3 and len(strip["value"]) == 3 and WARNING not in info  # a fitting value: no notice


def test_generation_settings_and_compare_frames_are_clamped_too(client, app_models):
    load_outputs(client, app_models["video"], FRAMES)
    job = client.submit("What moves?", 5000, 9.0, api_name="/ask")
    *_, info, max_new_tokens, temperature = job.result()
    assert (max_new_tokens, temperature) == (1024, 2.0)
    assert "Max new tokens: 5000 is more than the maximum, 1024" in info and "Temperature: 9 is more" in info
    a_frames, b_frames, *_, a, b, info = client.predict("What moves?", "stan", 999, "mean", 2, 8, 0.0,
                                                        api_name="/compare")
    assert (a_frames, b_frames) == (MAX_FRAMES, 2) and a and b
    assert "A: frames: 999 is more than the maximum" in info
    assert f"**A** · last answer: `stan`, {MAX_FRAMES} frames" in info


def test_every_slider_takes_enter_as_done_and_the_frame_box_resamples_on_it(chat):
    """Enter in a slider's number box leaves the box (the page's script), which is when Gradio sends
    the typed value: `release`, which re-samples. tests/app/test_app_browser.py presses Enter in Chromium."""
    from stanchat.app.server import JS

    app = build_app(chat, CONFIG)
    sliders = [c for c in app.get_config_file()["components"] if c["type"] == "slider"]
    assert len(sliders) == 5 and all("commit-on-enter" in c["props"]["elem_classes"] for c in sliders)
    (frames,) = [c["id"] for c in sliders if c["props"].get("elem_id") == "frames-slider"]
    (configure,) = {fn.name: fn for fn in app.fns.values() if (frames, "release") in fn.targets}.values()
    assert configure.name == "configure" and ".commit-on-enter input[type=number]" in JS


def _raised(call) -> StanchatError:
    with pytest.raises(StanchatError) as err:
        call()
    return err.value


def test_every_library_message_that_reaches_the_app_names_controls_not_flags(chat, app_models):
    """The messages of the real checks as the app words them: controls, never flags (no text is rewritten)."""
    from types import SimpleNamespace

    from stanchat.options import check_frames
    from stanchat.engine.prompt import check_context
    from stanchat.video import load_video
    from stanchat.video.watchdog import _exit_reason

    session = chat.session(load_video(app_models["video"], frames=2), 2)
    crashed = _exit_reason(SimpleNamespace(wait=lambda timeout: 1))  # the decode worker died
    messages = {
        "frames": _raised(lambda: check_frames(999, 64)),
        "frames-low": _raised(lambda: check_frames(0)),
        "concat": _raised(lambda: check_context(9300, 4096, 16 * 576, "concat", 16)),
        "concat-one": _raised(lambda: check_context(20100, 4096, 4 * 5000, "concat", 4)),
        "context": _raised(lambda: check_context(5000, 4096, 576, "stan", 16)),
        "tokens": _raised(lambda: session.stream("hi", max_new_tokens=0)),
        "temperature": _raised(lambda: session.stream("hi", temperature=-1)),
    }
    shown = {name: for_the_app(err) for name, err in messages.items()}
    assert all(shown[name] != str(err) for name, err in messages.items())  # str(err) is the command line's
    assert not [text for text in shown.values() if FLAGS.search(text)]
    assert shown["frames"] == ("Frames sampled 999 is more than the 64 frames STAN's temporal embedding covers; "
                               "set Frames sampled to 64 or fewer")
    assert shown["concat"].endswith("set Frames sampled to 6 or fewer, or Temporal mode to stan "
                                    "(576 video tokens for any number of frames)")
    assert shown["concat"].startswith("Temporal mode concat with 16 frames needs 9300 tokens")
    assert "; set Temporal mode to stan (5000 video tokens" in shown["concat-one"]
    assert shown["context"].endswith("; press Clear or ask a shorter question")
    assert shown["tokens"].startswith("Max new tokens must be at least 1")
    assert shown["temperature"].startswith("Temperature must be >= 0")
    assert crashed == "exit code 1; its output shows when stanchat runs with --debug"  # true in every front end


def test_a_prompt_over_the_context_is_explained_in_the_app_words(app_models, tmp_path):
    """End to end: concat over a 128-token context, in the chat, naming the controls to change."""
    short = load(llava=str(save_tiny_llava(tmp_path / "short", context=128)), stan=app_models["stan"], device="cpu")
    app = build_app(short, CONFIG)
    client = Client(launch(app, CONFIG, port=0, block=False, quiet=True), verbose=False)
    try:
        load_outputs(client, app_models["video"], frames=40, temporal="concat")
        messages, *_ = client.submit("What moves?", 10, 0.0, api_name="/ask").result()
    finally:
        app.close()
    _, answer = texts(messages)[-1]
    assert answer.startswith(f"{WARNING}Temporal mode concat with 40 frames needs")
    assert re.search(r"set Frames sampled to \d+ or fewer, or Temporal mode to stan", answer)
    assert not FLAGS.search(answer)


def test_gif_and_still_image_uploads_are_used_and_previewed_as_images(client, app_models, tmp_path):
    from PIL import Image

    png = tmp_path / "still.png"
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(png)
    gif = moving_gif(tmp_path / "moving.gif")
    for path, says in ((gif, "moving.gif** · 0.7 s · 8 fps · 24×24"), (png, "still.png** · still image · 30×20")):
        out = load_outputs(client, path, FRAMES)
        assert out["messages"] == [] and says in out["info"] and f"{FRAMES} frames →" in out["info"]
        assert len(out["strip"]["value"]) == FRAMES
        assert out["image"]["visible"] is True and out["video"]["visible"] is False
        assert out["image"]["value"].endswith(path.name)  # the client's download of the preview
    out = load_outputs(client, app_models["video"], FRAMES)  # a video keeps its video preview
    assert out["video"]["visible"] is True and out["image"]["visible"] is False


def _write_upload(path: Path, size: int = 32) -> Path:
    """A tiny file of `path`'s kind, `size` pixels square: a 12-frame video in one encoder its
    container takes, an animated GIF, or a still image."""
    import av
    from PIL import Image

    if path.suffix == ".gif":
        return moving_gif(path, size=size)
    if path.suffix not in VIDEO_ENCODERS:
        Image.fromarray(np.full((size, size, 3), 200, np.uint8)).save(path)
        return path
    with av.open(str(path), "w") as container:
        stream = container.add_stream(VIDEO_ENCODERS[path.suffix], rate=25)  # a rate MPEG-1 allows
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 20 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_every_kind_of_file_the_upload_box_offers_is_read(chat, tmp_path):
    from stanchat.video import load_video

    app = build_app(chat, CONFIG)
    (box,) = [c for c in app.get_config_file()["components"] if c["props"].get("elem_id") == "video"]
    offered = box["props"]["file_types"]
    read = {suffix: load_video(_write_upload(tmp_path / f"upload{suffix}"), frames=FRAMES).frames.shape
            for suffix in offered}
    assert box["type"] == "file" and {".mp4", ".gif", ".png"} <= set(offered)
    assert read == {suffix: (FRAMES, 32, 32, 3) for suffix in offered}


def test_the_plot_is_in_the_chat_tab_only(chat):
    """The frame weights answer the Chat tab's question: the Compare tab never shows them."""
    config = build_app(chat, CONFIG).get_config_file()
    components = {c["id"]: c for c in config["components"]}
    (plot,) = [i for i, c in components.items() if c["props"].get("elem_id") == "weights"]

    def tab_of(node, tab=None):
        here = components.get(node["id"], {})
        tab = here["props"]["label"] if here.get("type") == "tabitem" else tab
        if node["id"] == plot:
            return tab
        return next((found for child in node.get("children", []) if (found := tab_of(child, tab))), None)

    assert tab_of(config["layout"]) == "Chat"


def test_launch_prints_the_address_and_names_the_share_flag(chat, capsys):
    app = build_app(chat, CONFIG)
    capsys.readouterr()
    address = launch(app, CONFIG, port=0, block=False)
    try:
        printed = capsys.readouterr().out
    finally:
        app.close()
    assert printed == (f"stanchat app on {address}\n"
                       "(add --share (`stanchat serve --share`) for a public gradio.live link)\n")
    assert "share=True" not in printed and "launch()" not in printed
