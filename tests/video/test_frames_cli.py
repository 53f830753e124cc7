"""`stanchat frames`: what the model will see, as a table, JSON or PNG files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from conftest import DATA, REPO
from PIL import Image
from videogen import read_index

from stanchat.cli import main
from stanchat.video import load_video


def test_json_is_one_object_with_the_clip(capsys):
    path = DATA / "yoga.mp4"
    assert main(["frames", str(path), "--frames", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    clip = load_video(path, 8)
    assert out["frames"] == clip.indices and out["timestamps"] == clip.timestamps
    assert (out["fps"], out["duration"], out["width"], out["height"]) == (30.0, 10.0, 568, 320)
    assert out["decoder"] in ("decord", "pyav") and out["source_frames"] == 300


def test_table_lists_frames_and_times(capsys):
    assert main(["frames", str(DATA / "decord_video_90.mov"), "--frames", "3", "--backend", "pyav"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("320x568, 30.00 fps, 0.10 s, 3 frames; decoded with pyav")
    assert [line.split() for line in lines[2:]] == [["0", "0", "0.000"], ["1", "1", "0.033"], ["2", "2", "0.067"]]


def test_out_writes_pngs_named_with_timestamps(tmp_path, generated, capsys):
    out = tmp_path / "shots"
    args = ["frames", str(generated["h264.mkv"]), "--frames", "4", "--size", "48", "--no-crop", "--out", str(out)]
    args.append("--json")
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["frame0_0000.200s.png", "frame1_0000.600s.png", "frame2_0001.000s.png", "frame3_0001.400s.png"]
    assert summary["files"] == [str(out / n) for n in names]
    pictures = [np.asarray(Image.open(out / n).convert("RGB")) for n in names]
    assert [read_index(p) for p in pictures] == summary["frames"] == [5, 15, 25, 35]


def test_default_pngs_are_the_models_centre_square(tmp_path, capsys):
    assert main(["frames", str(DATA / "yoga.mp4"), "--frames", "2", "--size", "64", "--out", str(tmp_path)]) == 0
    assert "wrote 2 PNGs (64x64)" in capsys.readouterr().out
    sizes = set()
    for png in tmp_path.iterdir():
        with Image.open(png) as image:
            sizes.add(image.size)
    assert sizes == {(64, 64)}


def test_frames_command_does_not_load_torch():
    code = (
        "import sys\nfrom stanchat.cli import main\n"
        f"main(['frames', {str(DATA / 'bear-vp9-odd-dimensions.webm')!r}, '--json'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'gradio', 'av', 'decord') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[]"  # decoding happened in the worker
