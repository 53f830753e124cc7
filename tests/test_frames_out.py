"""`stanchat frames VIDEO --out DIR`: an --out that cannot be a folder is one line (exit 2), checked
before the video is decoded; a good one receives the PNGs."""

from pathlib import Path

import pytest

from stanchat.cli import main
from tests.evalkit import error_line

VIDEO = Path(__file__).parent / "data" / "videos" / "yoga.mp4"


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_an_out_that_cannot_be_a_folder_is_one_line(tmp_path, capsys, monkeypatch, where):
    import stanchat.video

    def no_decode(*args, **kwargs):
        raise AssertionError("the video was decoded before --out was checked")

    monkeypatch.setattr(stanchat.video, "load_video", no_decode)
    file = tmp_path / "taken.png"
    file.write_bytes(b"x")
    out = file if where == "file" else file / "x"
    assert main(["frames", str(VIDEO), "--frames", "2", "--out", str(out)]) == 2
    line = error_line(capsys.readouterr().err)
    assert f"--out {out}" in line and ("is a file" in line if where == "file" else "cannot create" in line)
    assert file.read_bytes() == b"x"


def test_an_out_under_a_system_file_is_one_line(capsys):
    if not Path("/etc/passwd").is_file():
        pytest.skip("no /etc/passwd here")
    assert main(["frames", str(VIDEO), "--frames", "2", "--out", "/etc/passwd/x"]) == 2
    assert "--out /etc/passwd/x: cannot create this folder" in error_line(capsys.readouterr().err)


def test_a_new_nested_out_is_created_and_filled(tmp_path, capsys):
    out = tmp_path / "a" / "b"
    assert main(["frames", str(VIDEO), "--frames", "2", "--size", "32", "--out", str(out)]) == 0
    assert len(list(out.glob("frame*_*s.png"))) == 2
    assert f"wrote 2 PNGs (32x32) to {out}" in capsys.readouterr().out
