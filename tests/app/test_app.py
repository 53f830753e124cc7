"""The chat app, driven over HTTP with gradio_client: upload, frames strip, streamed multi-turn chat,
stop, regenerate, clear, compare, the Mug frame-weight plot, bad uploads and the server's limits.
The app runs in this process on 127.0.0.1 on a free port, with a tiny model built in code (its
answers are gibberish: the tests check the mechanics, not the words)."""

import importlib.util
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from stanchat.app.config import AppConfig  # noqa: E402
from stanchat.app.conversation import NO_VIDEO, STOPPED, WARNING  # noqa: E402
from stanchat.app.server import launch  # noqa: E402
from stanchat.app.ui import MODEL, build_app  # noqa: E402
from stanchat.chat import load  # noqa: E402
from stanchat.cli import main  # noqa: E402
from stanchat.video import load_video  # noqa: E402
from tests.floats import FLOAT32_APPROX  # noqa: E402
from tests.tiny_app import app_models, chat, client, launched, load_outputs, texts  # noqa: E402,F401  (fixtures)

# gradio's queue calls pandas options that pandas 3 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

FRAMES = 5
L = 4  # tiny tower: 16 px frames, 8 px patches
CONFIG = AppConfig(frames=FRAMES, max_new_tokens=10, max_duration=5.0, max_file_size="100KB", queue_size=4)


@pytest.fixture(scope="module")
def url(chat):
    yield from launched(chat, CONFIG)


def open_video(client, path, frames=FRAMES, temporal="stan"):
    out = load_outputs(client, path, frames, temporal)
    return out["strip"], texts(out["messages"]), out["info"]


def ask(client, question, max_new_tokens=10):
    """Every streamed update of the chat, and the final outputs (chat, textbox, plot, info, and the
    max new tokens and temperature used)."""
    job = client.submit(question, max_new_tokens, 0.0, api_name="/ask")
    updates = [texts(out[0]) for out in job]
    return updates, job.result()


def test_upload_shows_the_sampled_frames_with_timestamps(client, app_models):
    strip, messages, info = open_video(client, app_models["video"])
    assert messages == []
    captions = [item["caption"] for item in strip["value"]]
    assert len(captions) == FRAMES and all(Path(item["image"]).is_file() for item in strip["value"])
    assert captions == [f"{t:.2f} s" for t in load_video(app_models["video"], frames=FRAMES).timestamps]
    assert captions[0] == "0.25 s" and captions[-1] == "2.62 s"  # 3 s at 8 fps: segment middles
    assert f"{FRAMES} frames → {L} video tokens" in info and "clip.mp4" in info


@pytest.mark.parametrize("squash, colours", [(False, ["green"] * 3), (True, ["red", "green", "blue"])])
def test_the_strip_shows_each_frame_as_the_tower_is_fed_it(chat, tmp_path, monkeypatch, squash, colours):
    """A frame three times as wide as high, red | green | blue: the centre crop of LLaVA-1.5's
    processor is its green middle; LLaVA-NeXT's squash keeps all three, side by side."""
    import dataclasses

    import numpy as np
    from PIL import Image

    from stanchat.app.conversation import Conversation

    monkeypatch.setattr(chat, "preprocessor", dataclasses.replace(chat.preprocessor, squash=squash))
    side = chat.preprocessor.crop_size
    wide = np.zeros((side, 3 * side, 3), np.uint8)
    for k in range(3):
        wide[:, k * side:(k + 1) * side, k] = 255
    Image.fromarray(wide).save(tmp_path / "wide.png")
    conversation = Conversation(chat, CONFIG, root=str(tmp_path))
    conversation.open(str(tmp_path / "wide.png"), 2, "stan")
    assert len(conversation.strip) == 2
    shown = np.asarray(Image.open(conversation.strip[0][0]).convert("RGB"))  # (side, side, 3): the strip is a lossy WebP
    dominant = [("red", "green", "blue")[int(shown[:, x].mean(axis=0).argmax())] for x in (0, side // 2, side - 1)]
    assert shown.shape == (side, side, 3) and dominant == colours


def test_answers_stream_over_several_turns(client, app_models):
    open_video(client, app_models["video"])
    updates, (messages, textbox, _plot, info, *_) = ask(client, "What moves?")
    answers = [u[-1][1] for u in updates if u and u[-1][0] == "assistant"]
    assert len(set(answers)) > 2  # the answer arrived in pieces, each a prefix of the next
    assert all(b.startswith(a) for a, b in zip(answers, answers[1:]))
    final = texts(messages)
    assert final[0] == ("user", "What moves?") and final[1][0] == "assistant" and final[1][1]
    assert textbox == "" and "last answer: `stan`" in info
    _, (messages, *_) = ask(client, "And then?")
    assert [role for role, _ in texts(messages)] == ["user", "assistant"] * 2
    assert texts(messages)[:2] == final  # the first turn is kept as it was


def test_plot_shows_the_question_weight_on_each_frame(client, app_models):
    strip, _, _ = open_video(client, app_models["video"])
    _, (_, _, plot, *_) = ask(client, "Where is the square?")
    rows = plot["value"]["data"]
    assert [label for label, _ in rows] == [item["caption"] for item in strip["value"]] == plot["sort"]
    assert sum(weight for _, weight in rows) == pytest.approx(1.0, **FLOAT32_APPROX)
    assert plot["visible"] is True and "“Where is the square?”" in plot["label"]


def test_regenerate_answers_the_last_question_again(client, app_models):
    open_video(client, app_models["video"])
    ask(client, "First?")
    _, (before, *_) = ask(client, "Second?")
    messages, *_ = client.predict(10, 0.0, api_name="/regenerate")
    assert texts(messages) == texts(before)  # greedy, and the replaced turn left the history


def test_clear_forgets_the_conversation_and_keeps_the_video(client, app_models):
    open_video(client, app_models["video"])
    ask(client, "First?")
    messages, _plot, info = client.predict(api_name="/clear")
    assert messages == [] and f"{FRAMES} frames" in info
    _, (messages, *_) = ask(client, "Again?")
    assert len(messages) == 2


class _Slow(StoppingCriteria):
    """Never stops generation, but makes each step take 20 ms, so that 500 tokens take seconds."""

    def __call__(self, input_ids, scores, **kwargs):
        time.sleep(0.02)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def test_stop_ends_generation_and_keeps_the_partial_answer(client, chat, app_models, monkeypatch):
    generate = chat.llava.generate
    monkeypatch.setattr(chat.llava, "generate", lambda **kw: generate(
        **{**kw, "stopping_criteria": StoppingCriteriaList([*kw["stopping_criteria"], _Slow()])}))
    open_video(client, app_models["video"])
    job = client.submit("Tell me everything.", 500, 0.0, api_name="/ask")
    for out in job:  # stop once the answer has started
        if texts(out[0])[-1][1]:
            client.predict(api_name="/stop")
            break
    messages = texts(job.result()[0])
    assert messages[-1][1].endswith(STOPPED)
    assert 0 < len(messages[-1][1].removesuffix(STOPPED)) < 500  # one character per token: far from the limit
    assert not [t for t in threading.enumerate() if t.name == "stanchat-generate"]  # the thread ended


def test_settings_resample_and_keep_the_conversation(client, app_models):
    open_video(client, app_models["video"])
    ask(client, "What moves?")
    frames, strip, messages, info = client.predict(3, "concat", api_name="/settings")
    assert frames == 3 and len(strip["value"]) == 3 and len(messages) == 2
    assert f"3 frames → {3 * L} video tokens · `concat`" in info


def test_compare_answers_two_ways_side_by_side(client, app_models):
    open_video(client, app_models["video"])
    *_, a, b, info = client.predict("What moves?", "stan", FRAMES, "concat", 2, 10, 0.0, api_name="/compare")
    assert a and b and not a.startswith(WARNING) and not b.startswith(WARNING)
    assert f"**A** · last answer: `stan`, {FRAMES} frames, {L} video tokens" in info
    assert f"**B** · last answer: `concat`, 2 frames, {2 * L} video tokens" in info


@pytest.mark.parametrize("kind, says", [
    ("text", "notes.txt"), ("truncated", "truncated.mp4"), ("noise", "noise.mp4"), ("long", "more than the 5 s limit"),
])
def test_bad_uploads_are_a_message_in_the_chat(client, app_models, kind, says):
    strip, messages, info = open_video(client, app_models[kind])
    assert len(messages) == 1 and messages[0][0] == "assistant" and messages[0][1].startswith(WARNING)
    assert says in messages[0][1] and "/tmp/gradio" not in messages[0][1]  # the file's name, not the server's path
    assert not strip["value"] and info == ""
    _, (messages, *_) = ask(client, "What happens?")  # the app lives on
    assert texts(messages)[-1] == ("assistant", NO_VIDEO)
    strip, _, _ = open_video(client, app_models["video"])
    assert len(strip["value"]) == FRAMES


def test_unexpected_errors_are_a_message_too(client, chat, app_models, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr("stanchat.chat.load_video", broken)
    chat.cache.clear()  # earlier tests encoded this video: it must be decoded again
    strip, messages, _ = open_video(client, app_models["video"])
    assert messages == [("assistant", f"{WARNING}could not use this video (RuntimeError: decoder exploded)")]
    assert not strip["value"]


def test_uploads_over_the_size_limit_are_refused(client, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 200_000)  # CONFIG allows 100 KB
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict(handle_file(str(big)), FRAMES, "stan", api_name="/load_video")


def test_model_events_share_one_queue_slot(chat):
    app = build_app(chat, CONFIG)
    queued = [fn for fn in app.fns.values() if fn.queue and fn.fn is not None]
    assert {fn.name for fn in queued} >= {"open", "configure", "ask", "regenerate", "clear", "compare"}
    assert all(fn.concurrency_id == MODEL for fn in queued)
    stops = [fn for fn in app.fns.values() if fn.name == "stop"]
    assert stops and not any(fn.queue for fn in stops)  # Stop must not wait behind what it stops


def test_plot_stays_hidden_without_a_text_tower(chat, app_models):
    no_text = load(llava=app_models["llava"], stan=app_models["stan_no_text"], device="cpu")
    assert chat.relevance is not None and no_text.relevance is None
    app = build_app(no_text, CONFIG)
    (plot,) = [c for c in app.get_config_file()["components"] if c["props"].get("elem_id") == "weights"]
    assert plot["props"]["visible"] is False
    client = Client(launch(app, CONFIG, port=0, block=False, quiet=True), verbose=False)
    try:
        open_video(client, app_models["video"])
        _, (messages, _, plot, *_) = ask(client, "Where is the square?")
    finally:
        app.close()
    assert texts(messages)[-1][1] and plot["visible"] is False


def test_serve_binds_localhost_without_a_share_link_by_default(monkeypatch, app_models):
    calls = []
    monkeypatch.setattr("stanchat.app.server.launch", lambda app, config, **kw: calls.append((app, config, kw)))
    assert main(["serve", "--llava", app_models["llava"], "--stan", app_models["stan"], "--device", "cpu"]) == 0
    (app, config, kwargs), = calls
    assert isinstance(app, gr.Blocks) and kwargs == {"host": "127.0.0.1", "port": 7860, "share": False}
    limits = (config.concurrency, config.max_file_size, config.max_duration, config.max_sessions)
    assert limits == (1, "200MB", 600.0, 32)


def test_serve_and_demo_script_refuse_bad_settings_before_loading(capsys, app_models, tmp_path):
    spec = importlib.util.spec_from_file_location("demo_app", Path(__file__).parents[2] / "demo" / "app.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.build_app is build_app
    for argv, says in ((["--frames", "0"], "--frames must be at least 1"),
                       (["--concurrency", "0"], "--concurrency must be at least 1"),
                       (["--examples", str(tmp_path / "missing")], "no such file or folder"),
                       (["--max-file-size", "lots"], "--max-file-size 'lots' is not a size; give a number and a unit"),
                       (["--max-file-size", "1.5.GB"], "e.g. 500kB, 200MB or 1.5GB"),
                       (["--max-file-size", "0"], "--max-file-size '0' is not a size"),
                       (["--max-file-size=-5MB"], "--max-file-size '-5MB' is not a size")):
        assert demo.main([*argv, "--llava", "/nonexistent", "--stan", app_models["stan"]]) == 2
        assert says in capsys.readouterr().err


def test_max_file_size_takes_decimal_and_lower_case_units():
    from stanchat.app.config import parse_size

    assert [parse_size(t) for t in ("200MB", "1.5GB", "500kB", "1 gb")] == [200 << 20, 3 << 29, 500 << 10, 1 << 30]


def test_examples_serve_only_the_example_files_not_their_folder(chat, app_models, tmp_path):
    """An example beside a key and a sibling: the server hands out the example, nothing else."""
    import httpx

    folder = tmp_path / "examples"
    (folder / ".ssh").mkdir(parents=True)
    (folder / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    (folder / "notes.txt").write_text("a sibling")
    example = folder / "clip.mp4"
    example.write_bytes(Path(app_models["video"]).read_bytes())
    config = AppConfig(frames=FRAMES, max_new_tokens=10, examples=(str(example),))
    app = build_app(chat, config)
    address = launch(app, config, port=0, block=False, quiet=True)
    try:
        status = {path.name: httpx.get(f"{address}gradio_api/file={path}").status_code
                  for path in (example, folder / "notes.txt", folder / ".ssh" / "id_rsa")}
    finally:
        app.close()
    assert status["clip.mp4"] == 200
    assert status["notes.txt"] != 200 and status["id_rsa"] != 200


def test_serve_samples_in_the_time_window_it_was_given(chat, app_models, capsys):
    """`stanchat serve --start/--end/--strategy/--fps` (as ask and chat): every video the app opens
    is sampled that way, and an impossible request is refused before the model loads."""
    from stanchat.app.conversation import Conversation
    from stanchat.commands.serve import app_config
    from stanchat.cli import build_parser  # noqa: I001

    args = build_parser().parse_args(["serve", "--frames", "4", "--start", "2", "--end", "4"])
    conversation = Conversation(chat, app_config(args))
    conversation.open(app_models["long"], 4, "stan")
    times = conversation.session.video.timestamps
    assert len(times) == 4 and all(2.0 <= t < 4.0 for t in times)
    for argv, says in ((["--strategy", "fps"], "fps"), (["--start", "5", "--end", "2"], "end")):
        assert main(["serve", *argv, "--llava", "/nonexistent", "--stan", app_models["stan"]]) == 2
        assert says in capsys.readouterr().err


def test_the_app_keeps_its_uploads_in_a_private_folder(chat, monkeypatch):
    """Gradio serves every file in its upload folder, by default /tmp/gradio shared by all Gradio
    apps on the machine: `stanchat serve` builds and serves its app on a 0700 folder of its own."""
    import os
    import stat

    from stanchat.app.server import private_upload_folder

    monkeypatch.setenv("GRADIO_TEMP_DIR", "/somewhere/else")
    with private_upload_folder() as folder:
        app = build_app(chat, CONFIG)
        assert app.GRADIO_CACHE == folder and stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert not os.path.exists(folder) and os.environ["GRADIO_TEMP_DIR"] == "/somewhere/else"


def test_quiet_launch_prints_nothing_and_keeps_python_errors_off_the_page(chat, capsys):
    """`launch(quiet=True)` (the tests, scripts) prints no banner; a Python error's text never
    reaches the browser (show_error off), only the one-line messages the app words itself."""
    app = build_app(chat, CONFIG)
    capsys.readouterr()
    launch(app, CONFIG, port=0, block=False, quiet=True)
    try:
        printed = capsys.readouterr().out
    finally:
        app.close()
    assert printed == "" and app.show_error is False
