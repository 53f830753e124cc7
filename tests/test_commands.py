"""`stanchat ask` / `stanchat chat` from the user's side: bad input, presets, the interactive loop."""

import io

import pytest

from stanchat.chat import VideoChat
from stanchat.cli import main
from stanchat.errors import StanchatError, WeightsError
from stanchat.pretrained import DEFAULT_PRESET, get_preset, preset_names, resolve
from tests.hub_cache import use_cache
from tests.tiny_llava import error_line, sessions_opened, tiny_models  # noqa: F401  (fixture)


def ask(tiny_models, *extra, video=None, question="What happens?"):
    return ["ask", video or tiny_models["video"], question, "--llava", tiny_models["default"], "--stan", tiny_models["stan"],
            "--max-new-tokens", "4", *extra]


@pytest.mark.parametrize("change, expected", [
    ({"question": "   "}, "question is empty"),
    ({"extra": ["--frames", "0"]}, "--frames must be at least 1"),
    ({"extra": ["--frames", "65"]}, "--frames 64 or fewer"),
    ({"extra": ["--dtype", "float8"]}, "unknown dtype 'float8'"),
    ({"extra": ["--device", "tpu"]}, "unknown device 'tpu'"),
    ({"video": "missing.mp4"}, "no such file or folder: missing.mp4"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tiny_models, change, expected):
    argv = ask(tiny_models, *change.get("extra", []), video=change.get("video"), question=change.get("question", "What?"))
    assert main(argv) == 2
    assert expected in error_line(capsys.readouterr().err)


def test_corrupt_video_is_one_line_and_exit_2(capsys, tiny_models, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    assert main(ask(tiny_models, video=str(bad))) == 2
    assert str(bad) in error_line(capsys.readouterr().err)


def test_unknown_preset_lists_the_valid_ones(capsys, tiny_models):
    assert main(["ask", tiny_models["video"], "What?", "--model", "llava-9b"]) == 2
    err = error_line(capsys.readouterr().err)
    assert "llava-9b" in err and all(name in err for name in preset_names())


def test_missing_stan_names_the_convert_command(capsys, tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("STANCHAT_HOME", str(tmp_path))
    use_cache(monkeypatch, tmp_path / "empty-hub")  # offline (conftest) with nothing cached
    assert main(["ask", tiny_models["video"], "What?"]) == 2
    err = error_line(capsys.readouterr().err)
    assert "hf download farewellthree/Mug_STAN_Weight Mug-StanL14.bin" in err
    assert f"stanchat convert official FILE --clip openai/clip-vit-large-patch14 --out {tmp_path}/mug-stan-l14" in err


def test_missing_llava_offline_is_one_line(capsys, tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache; HF_HUB_OFFLINE=1 from conftest
    assert main(["ask", tiny_models["video"], "What?", "--llava", "nobody/no-such-llava", "--stan", tiny_models["stan"]]) == 2
    assert "nobody/no-such-llava" in error_line(capsys.readouterr().err)


def test_not_a_llava_directory(capsys, tiny_models):
    assert main(["ask", tiny_models["video"], "What?", "--llava", tiny_models["stan"], "--stan", tiny_models["stan"]]) == 2
    assert "not a LLaVA" in error_line(capsys.readouterr().err)


def test_both_quantisations_are_refused(capsys, tiny_models):
    with pytest.raises(SystemExit) as exc:
        main(ask(tiny_models, "--load-4bit", "--load-8bit"))
    assert exc.value.code == 2


def test_debug_shows_the_traceback(tiny_models):
    with pytest.raises(StanchatError, match="question is empty"):
        main([*ask(tiny_models, question=" "), "--debug"])


def test_presets_resolve_and_overrides_win(tmp_path, monkeypatch):
    monkeypatch.setenv("STANCHAT_HOME", str(tmp_path))
    stan = tmp_path / get_preset(DEFAULT_PRESET).stan
    stan.mkdir()
    for name in ("config.json", "model.safetensors"):
        (stan / name).write_text("{}")
    spec = resolve()
    assert (spec.name, spec.llava, spec.stan) == (DEFAULT_PRESET, "llava-hf/llava-1.5-7b-hf", stan)
    assert resolve("llava-1.5-13b").llava == "llava-hf/llava-1.5-13b-hf"
    mine = resolve(llava="my/llava", stan=str(stan))
    assert mine.llava == "my/llava" and "my/llava" in mine.name
    with pytest.raises(WeightsError, match="does not exist"):
        resolve(stan=str(tmp_path / "nowhere"))


def test_chat_reads_questions_and_commands_from_a_pipe(capsys, tiny_models, monkeypatch):
    sessions = []
    make_session = VideoChat.session

    def spy(self, video, frames=16, temporal="stan", history=None, **options):
        path = str(video.path if hasattr(video, "path") else video)  # /temporal gets the sampled clip
        sessions.append((path, frames, temporal, list(history or [])))
        return make_session(self, video, frames, temporal, history, **options)

    monkeypatch.setattr(VideoChat, "session", spy)
    script = "What happens?\n\n/frames 4\nAnd then?\n/temporal mean\n/reset\n/video {other}\nWhy?\n/exit\nIgnored?\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script.format(other=tiny_models["other"])))
    argv = ["chat", tiny_models["video"], "--llava", tiny_models["default"], "--stan", tiny_models["stan"], "--max-new-tokens", "4",
            "--frames", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 3  # one line per answered question, nothing else on stdout
    assert [s[:3] for s in sessions] == [(tiny_models["video"], 3, "stan"), (tiny_models["video"], 4, "stan"),
                                         (tiny_models["video"], 4, "mean"), (tiny_models["other"], 4, "mean")]
    assert len(sessions[1][3]) == 1 and sessions[3][3] == []  # /frames keeps the conversation, /video starts anew


def test_chat_reports_bad_commands_and_reads_on(capsys, tiny_models, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("/frames many\n/video nowhere.mp4\n/dance\nStill there?\n"))
    argv = ["chat", tiny_models["video"], "--llava", tiny_models["default"], "--stan", tiny_models["stan"], "--max-new-tokens", "3"]
    assert main(argv) == 2  # from a pipe, a failed line makes the exit status say so
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("stanchat: error: ")]
    assert len(errors) == 3 and "Traceback" not in captured.err
    assert "whole number" in errors[0] and "nowhere.mp4" in errors[1] and "unknown command" in errors[2]
    assert len(captured.out.splitlines()) == 1


def test_ask_samples_by_fps_in_a_time_window(capsys, tiny_models):
    """`ask` takes the sampling options of `frames` (one shared definition): by fps, in a window."""
    import json

    argv = ask(tiny_models, "--frames", "8", "--strategy", "fps", "--fps", "4", "--start", "0.25", "--end", "0.75", "--json")
    assert main(argv) == 0
    stamps = json.loads(capsys.readouterr().out)["timestamps"]
    assert 1 <= len(stamps) <= 2 and all(0.25 - 1e-6 <= t < 0.75 for t in stamps), stamps
    assert main(ask(tiny_models, "--strategy", "fps")) == 2  # fps without a rate: one line, exit 2
    assert "needs a positive fps" in error_line(capsys.readouterr().err)


def test_chat_samples_in_a_time_window(capsys, tiny_models, monkeypatch):
    clips = sessions_opened(monkeypatch)
    monkeypatch.setattr("sys.stdin", io.StringIO("What happens?\n"))
    argv = ["chat", tiny_models["video"], "--llava", tiny_models["default"], "--stan", tiny_models["stan"],
            "--max-new-tokens", "4", "--frames", "4", "--start", "0.5", "--end", "1.0"]
    assert main(argv) == 0
    assert all(0.5 - 1e-6 <= t < 1.0 for t in clips[0].timestamps), clips[0].timestamps


def test_ctrl_c_mid_answer_stops_the_answer_not_the_chat(capsys, tiny_models, monkeypatch):
    from stanchat.session import Stream

    iterate, closed = Stream.__iter__, []

    def interrupted_once(self):
        for n, piece in enumerate(iterate(self)):
            if n == 1 and not closed:
                raise KeyboardInterrupt  # what Ctrl-C raises while the answer streams
            yield piece

    monkeypatch.setattr(Stream, "__iter__", interrupted_once)
    close = Stream.close
    monkeypatch.setattr(Stream, "close", lambda self: (closed.append(self), close(self)))
    monkeypatch.setattr("sys.stdin", io.StringIO("What happens?\nAnd then?\n"))
    argv = ["chat", tiny_models["video"], "--llava", tiny_models["default"], "--stan", tiny_models["stan"],
            "--max-new-tokens", "4", "--temperature", "0"]
    assert main(argv) == 0  # not 130: the conversation went on
    captured = capsys.readouterr()
    assert len(closed) == 1 and "answer stopped" in captured.err
    assert len(captured.out.splitlines()) == 2  # the stopped answer's first piece, then the full second answer


def test_chat_help_lists_the_commands(capsys, tiny_models, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("/help\n/exit\n"))
    argv = ["chat", tiny_models["video"], "--llava", tiny_models["default"], "--stan", tiny_models["stan"]]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("/video PATH", "/frames N", "/temporal MODE", "/reset", "/exit"))
