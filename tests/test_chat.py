"""`stanchat.load`, sessions, streaming, quantisation and `stanchat ask` on a tiny LLaVA + STAN."""

import io
import json
import re
import sys

import pytest
import torch

import stanchat
from stanchat.chat import load
from stanchat.cli import main
from tests.tiny_llava import IMAGE_SIZE, PATCH_SIZE, error_line, sessions_opened, tiny_models  # noqa: F401  (fixture)

L = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 4 patches per frame
KEYS = {"answer", "finish_reason", "video", "frames", "timestamps", "video_tokens", "temporal", "model", "preset", "timings",
        "weights", "spans"}  # preset: None with --llava + --stan


@pytest.fixture(scope="module")
def chat(tiny_models):
    return load(llava=tiny_models["default"], stan=tiny_models["stan"], device="cpu")


def ask_json(capsys, tiny_models, *extra, llava="default"):
    argv = ["ask", tiny_models["video"], "What happens?", "--llava", tiny_models[llava], "--stan", tiny_models["stan"],
            "--max-new-tokens", "6", "--json", *extra]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("strategy, per_image", [("default", L), ("full", L + 1)])
@pytest.mark.parametrize("frames", [1, 5, 64])
def test_ask_json_counts_video_tokens(capsys, tiny_models, strategy, per_image, frames):
    for temporal, expected in (("stan", per_image), ("mean", per_image), ("concat", frames * per_image)):
        out = ask_json(capsys, tiny_models, "--frames", str(frames), "--temporal", temporal, llava=strategy)
        assert set(out) == KEYS and out["preset"] is None
        assert (out["video_tokens"], out["frames"], out["temporal"]) == (expected, frames, temporal)
        assert len(out["timestamps"]) == frames and out["timestamps"] == sorted(out["timestamps"])
        assert set(out["timings"]) == {"decode", "vision", "select", "prefill", "generate", "total"}
        assert out["weights"] is None and out["spans"] is None  # uniform frames, one block


def test_ask_json_timings_count_everything_spent_on_the_video(capsys, tiny_models, monkeypatch):
    """`ask --json`'s decode time is the command's own decoding (sampling, decoding in the worker,
    preprocessing: it used to happen before the timed part), and total holds every part."""
    import time

    from stanchat import chat as chat_module

    load_video, spent = chat_module.load_video, []

    def timed(*args, **kwargs):
        start = time.perf_counter()
        clip = load_video(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return clip

    monkeypatch.setattr(chat_module, "load_video", timed)
    timings = ask_json(capsys, tiny_models, "--frames", "8")["timings"]
    assert len(spent) == 1 and timings["decode"] >= spent[0] > 0
    assert timings["total"] >= sum(timings[part] for part in ("decode", "vision", "prefill", "generate"))


def test_ask_streams_the_same_answer_it_prints_as_json(capsys, tiny_models):
    answer = ask_json(capsys, tiny_models)["answer"]
    assert main(["ask", tiny_models["video"], "What happens?", "--llava", tiny_models["default"], "--stan", tiny_models["stan"],
                 "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == answer + "\n"


def test_mean_one_frame_equals_stock_llava_image_features(chat, tiny_models):
    session = chat.session(tiny_models["video"], frames=1, temporal="mean")
    pixels = chat.preprocess(session.video)  # (1, 1, 3, H, W)
    stock = chat.llava.model.get_image_features(pixel_values=pixels[:, 0]).pooler_output[0]
    assert torch.equal(session.features[0], stock)  # exact: the same layers and projector on the same pixels


def test_streaming_matches_greedy_generation(chat, tiny_models):
    answer = chat.ask(tiny_models["video"], "Describe the video.", frames=4, max_new_tokens=24)
    stream = chat.stream(tiny_models["video"], "Describe the video.", frames=4, max_new_tokens=24)
    pieces = list(stream)
    assert len(pieces) > 1 and answer.text  # really streamed, and said something
    assert "".join(pieces) == answer.text == stream.answer.text
    assert stream.answer.video_tokens == answer.video_tokens == L


def test_history_reaches_the_prompt_and_video_is_encoded_once(chat, tiny_models, monkeypatch):
    session = chat.session(tiny_models["video"], frames=3)
    first = session.ask("What moves?", max_new_tokens=8)
    seen = []
    submit = chat.engine.submit

    def spy(job):
        seen.append(job.prompt_ids)
        return submit(job)

    monkeypatch.setattr(chat.engine, "submit", spy)
    second = session.ask("Where does it go?", max_new_tokens=8)
    prompt = chat.processor.tokenizer.decode(seen[0], skip_special_tokens=True)
    assert prompt.index("What moves?") < prompt.index(first.text) < prompt.index("Where does it go?")
    assert seen[0].count(chat.image_token_id) == 1  # the video once, in turn 1 (the engine expands it to N)
    assert first.timings["vision"] > 0 and second.timings["vision"] == second.timings["decode"] == 0.0
    assert session.history == [("What moves?", first.text), ("Where does it go?", second.text)]
    session.reset()
    assert session.history == [] and session.prompt("Again?").count(chat.processor.image_token) == 1


def test_a_cancelled_encode_leaves_nothing_in_the_cache(chat, tiny_models):
    import threading

    from stanchat.options import VideoOptions

    chat.cache.clear()
    options = VideoOptions(frames=7)
    cancel = threading.Event()
    cancel.set()  # the caller's client has gone
    with pytest.raises(stanchat.errors.Cancelled):
        chat.encode(tiny_models["video"], options, cancel=cancel)
    assert chat.cache.stats()["entries"] == 0
    first = chat.encode(tiny_models["video"], options, cancel=threading.Event())
    assert not first.cache_hit and chat.encode(tiny_models["video"], options).cache_hit


def test_the_frame_size_ceiling_holds_for_cached_videos_too(chat, tiny_models):
    from stanchat.options import VideoOptions

    options = VideoOptions(frames=3)
    chat.encode(tiny_models["video"], options)  # 32x32 frames, cached
    with pytest.raises(stanchat.errors.VideoError, match="has 32x32 frames .* limit of 1,023 pixels a frame"):
        chat.encode(tiny_models["video"], options, max_pixels=32 * 32 - 1)
    assert chat.encode(tiny_models["video"], options, max_pixels=32 * 32).cache_hit


def test_stream_rejects_bad_questions_before_generating(chat, tiny_models):
    session = chat.session(tiny_models["video"], frames=2)
    with pytest.raises(stanchat.errors.StanchatError, match="empty"):
        session.stream("   ")
    with pytest.raises(stanchat.errors.StanchatError, match="<image>.* token; remove it"):
        session.ask("what is <image>?")


def test_load_is_exported_lazily():
    assert stanchat.load is load


@pytest.mark.parametrize("flag, layer", [("load_in_4bit", "Linear4bit"), ("load_in_8bit", "Linear8bitLt")])
def test_quantised_loading_answers(tiny_models, flag, layer):
    chat = load(llava=tiny_models["default"], stan=tiny_models["stan"], device="cpu", **{flag: True})
    llm_linears = {type(m).__name__ for n, m in chat.llava.named_modules() if "language_model.layers" in n}
    assert layer in llm_linears
    assert type(chat.llava.model.vision_tower.encoder.layers[0].mlp.fc1) is torch.nn.Linear  # the tower stays float
    answer = chat.ask(tiny_models["video"], "What happens?", frames=4, max_new_tokens=5)
    assert answer.video_tokens == L and answer.frames == 4


def test_cli_loads_4bit(capsys, tiny_models):
    assert ask_json(capsys, tiny_models, "--load-4bit", "--frames", "2")["video_tokens"] == L


def test_concat_past_the_context_is_refused(capsys, tiny_models):
    argv = ["ask", tiny_models["video"], "What happens?", "--llava", tiny_models["short"], "--stan", tiny_models["stan"],
            "--temporal", "concat", "--max-new-tokens", "2"]
    assert main([*argv, "--frames", "64"]) == 2
    err = error_line(capsys.readouterr().err)
    assert "128-token context" in err and "--temporal stan" in err
    fit = int(re.search(r"--frames (\d+) or fewer", err).group(1))  # the suggestion is exact
    assert main([*argv, "--frames", str(fit), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["video_tokens"] == fit * L
    assert main([*argv, "--frames", str(fit + 1)]) == 2


def test_stream_close_keeps_the_answer_so_far(chat, tiny_models):
    full = chat.ask(tiny_models["video"], "Describe the video.", frames=2, max_new_tokens=40)
    stream = chat.stream(tiny_models["video"], "Describe the video.", frames=2, max_new_tokens=40)
    stream.close()  # e.g. a Stop button pressed at once: generation ends after its first token
    pieces = list(stream)
    assert stream.answer.text == "".join(pieces) and len(stream.answer.text) <= 1
    assert full.text.startswith(stream.answer.text) and len(full.text) > 1
    assert stream.session.history == [("Describe the video.", stream.answer.text)]


def test_leaving_a_stream_early_records_nothing(chat, tiny_models):
    session = chat.session(tiny_models["video"], frames=2)
    stream = session.stream("Describe the video.", max_new_tokens=40)
    for _ in stream:
        break
    assert stream.answer is None and session.history == []
    assert session.ask("Describe the video.", max_new_tokens=4).text is not None  # the session still works


def test_sampling_and_device_map(tiny_models):
    chat = load(llava=tiny_models["default"], stan=tiny_models["stan"], device_map={"": "cpu"})
    torch.manual_seed(0)
    answers = {chat.ask(tiny_models["video"], "What?", frames=2, temperature=1.5, max_new_tokens=12).text
               for _ in range(3)}
    assert len(answers) > 1  # sampling at a high temperature varies


def test_a_session_answers_through_the_chats_engine(chat, tiny_models):
    """A Session holds an encoded video and answers through `chat.engine` (the one engine): the same
    answer as `chat.ask`, the engine's batch counter moves, and an over-long prompt is refused."""
    from stanchat.errors import StanchatError
    from stanchat.options import VideoOptions
    from stanchat.session import Session

    encoded = chat.encode(tiny_models["video"], VideoOptions(frames=4))
    alone = Session(chat, encoded)
    before = chat.engine.batches
    assert alone.ask("What happens?", max_new_tokens=4).text == chat.ask(tiny_models["video"], "What happens?",
                                                                           frames=4, max_new_tokens=4).text
    assert chat.engine.batches == before + 2
    with pytest.raises(StanchatError, match="context"):
        alone.ask("word " * (chat.context_length + 1))


def chat_argv(tiny_models, *extra):
    return ["chat", tiny_models["video"], "--llava", tiny_models["default"], "--stan", tiny_models["stan"],
            "--max-new-tokens", "4", "--temperature", "0", *extra]


def test_chat_ctrl_c_while_a_new_video_encodes_keeps_the_chat(capsys, tiny_models, monkeypatch):
    """`/video PATH` encodes the new video before the next question: Ctrl-C there keeps the
    conversation on the video it had, and the chat goes on."""
    from stanchat.chat import VideoChat

    encode, calls = VideoChat._encode, []

    def interrupted_second(self, video, *args):
        calls.append(str(video))
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises while the new video decodes or the tower encodes it
        return encode(self, video, *args)

    monkeypatch.setattr(VideoChat, "_encode", interrupted_second)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"/video {tiny_models['other']}\nWhat happens?\n"))
    assert main(chat_argv(tiny_models)) == 0  # not 130: the conversation went on
    captured = capsys.readouterr()
    assert calls == [tiny_models["video"], tiny_models["other"]] and "stopped" in captured.err
    assert len(captured.out.splitlines()) == 1  # the answer about the first video


def test_chat_commands_keep_the_sampling_options(capsys, tiny_models, monkeypatch):
    """/frames and /video sample with the chat's --strategy/--start/--end/--seed; /temporal reuses the frames."""
    from stanchat.video import load_video

    clips = sessions_opened(monkeypatch)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"/frames 3\n/temporal mean\n/video {tiny_models['other']}\nWhy?\n"))
    options = {"strategy": "random", "start": 0.5, "end": 2.0}
    argv = chat_argv(tiny_models, "--frames", "5", "--strategy", "random", "--seed", "7", "--start", "0.5", "--end", "2.0")
    assert main(argv) == 0
    expected = [load_video(path, frames, **options, generator=7).indices
                for path, frames in [(tiny_models["video"], 5), (tiny_models["video"], 3), (tiny_models["other"], 3)]]
    assert [clips[0].indices, clips[1].indices, clips[3].indices] == expected
    assert clips[2] is clips[1]  # /temporal encodes the same decoded frames again, nothing re-sampled
    assert all(0.5 - 1e-6 <= t < 2.0 for clip in clips for t in clip.timestamps)
    assert expected[1] != load_video(tiny_models["video"], 3).indices  # the options matter for this check


def test_line_editing_keeps_a_history_across_chats(tmp_path, monkeypatch):
    readline = pytest.importorskip("readline")
    import atexit

    from stanchat.commands import chat as chat_command

    monkeypatch.setenv("STANCHAT_HOME", str(tmp_path / "home"))
    saved = []
    monkeypatch.setattr(atexit, "register", saved.append)
    readline.clear_history()
    chat_command._line_editing()  # no history file yet: starts empty
    assert readline.get_current_history_length() == 0
    readline.add_history("What happens?")
    saved.pop()()  # what runs when the chat ends
    history = tmp_path / "home" / chat_command.HISTORY_FILE
    assert history.read_text().splitlines()[-1] == "What happens?"
    readline.clear_history()
    chat_command._line_editing()  # the next chat reads it back
    assert readline.get_history_item(readline.get_current_history_length()) == "What happens?"
    readline.clear_history()


def test_prompt_works_without_readline(monkeypatch):
    from stanchat.commands import chat as chat_command

    monkeypatch.setitem(sys.modules, "readline", None)  # `import readline` raises ImportError
    answers = iter(["What happens?", "/exit"])

    def typed(prompt):
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None  # Ctrl-D

    monkeypatch.setattr("builtins.input", typed)
    assert list(chat_command._lines(interactive=True)) == ["What happens?", "/exit"]
