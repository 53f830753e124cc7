"""Benchmarks must keep running: each one's main() at a toy size (numbers are not checked here)."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, argv", [
    ("stan_overhead", ["--layers", "2", "--width", "64", "--image-size", "28", "--frames", "2", "--repeats", "1", "--depth", "1"]),
])
def test_benchmark_runs_at_toy_size(name, argv, capsys):
    assert _load(name).main(argv) == 0
    assert "ratio" in capsys.readouterr().out
