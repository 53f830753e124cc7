"""Bad input: `stanchat frames` exits 2 with one line naming the problem; no traceback, no hang."""

from __future__ import annotations

import os

import pytest
from conftest import DATA
from videogen import make_audio_only, make_empty_video

from stanchat.cli import main
from stanchat.errors import StanchatError, VideoError
from stanchat.video import load_video


def _truncated(tmp_path, name: str, fraction: float = 0.5):
    data = (DATA / name).read_bytes()
    path = tmp_path / f"cut-{name}"
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _make(tmp_path, case: str) -> str:
    """Create the bad input for `case` in tmp_path and return the argument to pass."""
    if case == "missing":
        return str(tmp_path / "nope.mp4")
    if case == "folder without frames":
        (tmp_path / "readme.txt").write_text("no pictures here")
        return str(tmp_path)
    if case == "url":
        return "http://example.com/video.mp4"
    path = tmp_path / "video.mp4"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("This is not a video.\nJust some notes.\n")
    elif case == "html":
        path.write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    elif case == "pdf":
        path.write_bytes(b"%PDF-1.4\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n")
    elif case == "random bytes":
        path.write_bytes(bytes(range(256)) * 64)
    elif case == "audio only":
        make_audio_only(path)
    elif case == "zero duration":
        make_empty_video(path)
    elif case == "truncated mp4":  # index (moov) at the end: nothing is readable
        return str(_truncated(tmp_path, "yoga.mp4"))
    elif case == "truncated webm":  # readable start, the rest missing
        return str(_truncated(tmp_path, "bear-vp9-odd-dimensions.webm"))
    elif case == "truncated avi":
        return str(_truncated(tmp_path, "mmaction2_test.avi"))
    return str(path)


# case -> words the one-line message must contain
CASES = {
    "missing": "no such file",
    "folder without frames": "has no frames",
    "url": "URLs are not supported",
    "empty": "is empty",
    "text": "is a text file",
    "html": "HTML page",
    "pdf": "is a PDF document",
    "random bytes": "cannot read",
    "audio only": "no video stream (audio only)",
    "zero duration": "no frames",
    "truncated mp4": "truncated, corrupt or not a video?",
    "truncated webm": "is truncated",
    "truncated avi": "is truncated",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, case):
    argument = _make(tmp_path, case)
    assert main(["frames", argument, "--frames", "4"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("stanchat: error: ") and CASES[case] in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.mark.parametrize("case", ["text", "zero duration", "truncated webm"])
def test_the_library_raises_video_error(tmp_path, case):
    with pytest.raises(VideoError, match=CASES[case]):
        load_video(_make(tmp_path, case), 4)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"frames": 0}, "frames must be"),
        ({"strategy": "best"}, "choose one of: uniform, random, fps"),
        ({"strategy": "fps"}, "needs a positive fps"),
        ({"fps": 2.0}, "only applies to strategy 'fps'"),
        ({"start": 2.0, "end": 1.0}, "must be after start"),
        ({"start": 99.0}, "past the end of the video"),
        ({"size": 0}, "size must be"),
        ({"backend": "opencv"}, "choose one of: auto, decord, pyav"),
    ],
)
def test_impossible_requests_name_the_fix(kwargs, words):
    with pytest.raises(StanchatError, match=words):
        load_video(DATA / "bear-vp9-odd-dimensions.webm", **{"frames": 4, **kwargs})


def test_unreadable_file_is_reported(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "locked.mp4"
    path.write_bytes(b"\0" * 64)
    path.chmod(0)
    with pytest.raises(VideoError, match="permission denied"):
        load_video(path, 4)


def test_video_modules_need_no_hidden_import_to_break_a_circle():
    """VideoInfo lives in a leaf (stanchat.video.info) that imports nothing of stanchat.video, and
    no module of stanchat.video imports another inside a function except probe's PyAV-lazy
    container import."""
    import ast
    from pathlib import Path

    import stanchat.video

    folder = Path(stanchat.video.__file__).parent
    leaf = ast.parse((folder / "info.py").read_text())
    assert not [n for n in ast.walk(leaf) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("stanchat.video")]
    hidden = []
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                hidden += [(path.name, inner.module) for inner in ast.walk(node)
                           if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("stanchat.video")]
    assert hidden == [("probe.py", "stanchat.video.container")]
