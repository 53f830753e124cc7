"""The decode benchmark still runs (small settings; the real run is `python benchmarks/decode.py`)."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import REPO


@pytest.mark.slow
def test_benchmark_runs_end_to_end(capsys):
    spec = importlib.util.spec_from_file_location("decode_benchmark", REPO / "benchmarks" / "decode.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.main(["--seconds", "8", "--gop", "30", "--frames", "4", "--size", "32", "--repeat", "1",
                           "--fit-seconds", "2", "--fit-frames", "4", "--fit-memory-frames", "8", "--fit-repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "seeking vs decoding (and converting) every frame" in out and "target >= 10x" in out
    assert "ask decode + preprocess, 4 frames of 1080p: full-size / fitted time (warm worker)" in out
    assert "fitted, 8 frames: peak RSS of a 1080p clip minus a 426x240 clip" in out and "target <= 200 MiB" in out
    assert "is truncated: its header declares 240 frames" in out
