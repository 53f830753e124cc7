"""Benchmarks must keep running, and the results page must say what they measured.

Each benchmark's main() runs at a toy size (numbers are not checked: no timing thresholds); the
page is rendered from results whose numbers are given, so met / missed can be checked exactly.
"""

import dataclasses
import importlib
import json
import math

import pytest
import torch

from benchmarks import BENCHMARKS, get_benchmark, runner
from benchmarks.gpu import NO_GPU, largest_fitting
from benchmarks.page import Run, render
from benchmarks.results import Figure, Result, Target, format_value

TOY_ARGV = {
    "stan_overhead": ["--layers", "2", "--width", "64", "--image-size", "28", "--frames", "2", "--repeats", "1",
                      "--depth", "1"],
    "prefill": ["--layers", "1", "--width", "64", "--frames", "1", "--repeats", "1"],
    "decode": ["--seconds", "2", "--gop", "15", "--repeat", "1", "--watchdog-repeat", "2", "--fit-seconds", "2",
               "--fit-frames", "4", "--fit-memory-frames", "8", "--fit-repeat", "1"],
    "eval_memory": ["--n-full", "8", "--n-literal", "4,6", "--n-one-shot", "4,6", "--chunk", "4", "--tokens", "4",
                    "--frames", "2", "--width", "8"],
    "train_throughput": ["--steps", "1", "--layers", "1", "--width", "64", "--image-size", "32", "--frames", "2",
                         "--batch", "2", "--device", "cpu", "--loader-clips", "4", "--loader-rounds", "1",
                         "--clip-size", "32", "--clip-frames", "8"],
    "ask": ["--repeats", "1", "--frames", "2", "--max-new-tokens", "3", "--device", "cpu"],
    "selection": ["--minutes", "0.25", "--candidates", "16", "--frames", "4", "--repeats", "1", "--device", "cpu"],
    "serve": ["--requests", "4", "--clients", "2", "--max-tokens", "3", "--engines", "one", "batched"],
    "startup": ["--repeats", "1"],
    "gpu": ["--toy", "--device", "cpu", "--dtype", "float32", "--frames", "2", "--repeats", "1", "--new-tokens", "2",
            "--search-cap", "4", "--budget-gib", "1"],
}


def test_every_benchmark_has_a_toy_size():
    assert sorted(TOY_ARGV) == sorted(BENCHMARKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TOY_ARGV))
def test_benchmark_runs_at_toy_size(name, tmp_path, capsys):
    out = tmp_path / "result.json"
    assert importlib.import_module(f"benchmarks.{name}").main(TOY_ARGV[name] + ["--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = Result.load(out)
    assert result.name == name and result.status == "ok" and result.figures
    for figure in result.figures:
        assert math.isfinite(figure.value), figure
        assert f"{figure.label}: {figure.text()}" in printed  # every figure printed, with its target if any


@pytest.mark.slow
@pytest.mark.parametrize("argv, reasons", [
    (["--vllm-python", "/no/such/python"], {"vllm": "no vLLM environment at /no/such/python"}),
    (["--preset", "llava-1.5-7b", "--toy", "--device", "cpu"],
     {"vllm": "random weights", "cold": "not on this machine"}),
])
def test_serve_records_the_rows_it_cannot_measure_and_why(argv, reasons, tmp_path, capsys):
    from benchmarks import serve

    out = tmp_path / "serve.json"
    toy = [*TOY_ARGV["serve"][:-2], "one", "vllm"]  # ask for vLLM too
    assert serve.main([*toy, *argv, "--json", str(out)]) == 0
    result, printed = Result.load(out), capsys.readouterr().out
    assert sorted(result.data["not_measured"]) == sorted(reasons) and list(result.data["rows"]) == ["one", "one-miss"]
    for key, says in reasons.items():
        why = result.data["not_measured"][key]
        assert says in why and f"not measured: {why}" in printed
        assert any(says in note for note in result.notes)  # the page says so too
    assert result.data["weights"] == ("random" if "--toy" in argv else "bundled")


def test_gpu_refuses_cuda_without_one(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from benchmarks import gpu

    assert gpu.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == NO_GPU and "\n" not in err


@pytest.mark.parametrize("cap, fit_up_to, expected", [
    (1024, 0, 0), (1024, 1, 1), (1024, 300, 300), (1024, 1024, 1024), (1024, 5000, 1024), (10, 6, 6), (1, 1, 1),
])
def test_largest_fitting_finds_the_boundary(cap, fit_up_to, expected):
    probes = []

    def fits(frames):
        probes.append(frames)
        return frames <= fit_up_to

    assert largest_fitting(fits, cap) == expected
    assert all(1 <= p <= cap for p in probes) and len(probes) <= 2 * math.log2(cap) + 2


@pytest.mark.parametrize("comparison, bound, value, met", [
    ("<=", 1.25, 1.25, True), ("<=", 1.25, 1.26, False), ("<", 0.3, 0.3, False), ("<", 0.3, 0.29, True),
    (">=", 10, 10, True), (">=", 10, 9.9, False), (">", 0, 0, False),
])
def test_target_met(comparison, bound, value, met):
    assert Figure("f", value, "x", Target(comparison, bound)).met is met
    assert Figure("f", value, "x").met is None


def test_unknown_names_fail_listing_the_valid_ones():
    with pytest.raises(ValueError, match="<="):
        Target("=<", 1)
    with pytest.raises(KeyError, match="stan_overhead"):
        get_benchmark("nope")
    with pytest.raises(SystemExit):
        runner.main(["--only", "nope"])


def test_result_round_trips_through_json(tmp_path):
    result = Result("x", "X", "setup", [Figure("a", 1.5, "x", Target("<=", 2), "1 vs 2"), Figure("b", 3, "s")],
                    ["a note"], {"raw": [1, 2]})
    result.save(tmp_path / "r.json")
    assert Result.load(tmp_path / "r.json") == result
    assert json.loads((tmp_path / "r.json").read_text())["figures"][0]["target"] == {"comparison": "<=", "bound": 2}


def _toy_runs():
    overhead = Result("stan_overhead", "STAN overhead", "toy tower", figures=[
        Figure("CLIP+STAN / CLIP time, T = 8", 1.3, "x", Target("<=", 1.25), "13 s vs 10 s"),
        Figure("CLIP+STAN / CLIP time, T = 16", 1.2, "x")])
    startup = Result("startup", "Start-up", "fresh processes", figures=[
        Figure("`stanchat --help` wall time", 0.21, "s", Target("<", 0.3), "floor 0.05 s")],
        notes=["Nothing heavy is imported."])
    gpu = Result("gpu", "GPU", status="skipped", reason=runner.NO_GPU)
    return [Run(overhead, "python benchmarks/stan_overhead.py --frames 8", 12.0, (1.0, 1.5)),
            Run(startup, "python benchmarks/startup.py", 3.0, (1.5, 1.5)),
            Run(gpu, "python benchmarks/gpu.py", 0.0, (None, None))]


def test_page_shows_every_figure_with_its_target_and_verdict(tmp_path):
    machine = {"CPU": "Toy CPU", "date": "2030-01-01 00:00 UTC", "commit": "abc", "GPU": "none lent"}
    page = tmp_path / "PERFORMANCE.md"
    page.write_text(render(_toy_runs(), machine, "python -m benchmarks", quick=False))
    text = page.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    overhead = next(r for r in rows if r.startswith("| CLIP+STAN / CLIP time, T = 8 |"))
    assert "**1.30x**" in overhead and "<= 1.25x" in overhead and "**missed**" in overhead
    assert "`python benchmarks/stan_overhead.py --frames 8`" in overhead
    untargeted = next(r for r in rows if r.startswith("| CLIP+STAN / CLIP time, T = 16 |"))
    assert "missed" not in untargeted and "met" not in untargeted.replace("benchmarks", "")
    startup = next(r for r in rows if r.startswith("| `stanchat --help` wall time |"))
    assert "**0.210 s**" in startup and "< 0.3 s" in startup and "| met |" in startup
    assert "## Targets: 1 of 2 met" in text
    assert "Nothing heavy is imported." in text and "| CPU | Toy CPU |" in text
    assert f"GPU figures: none, {runner.NO_GPU}." in text and "Quick run" not in text


def test_runner_writes_the_page_and_records_failures(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "gpu_name", lambda: "")  # as on a machine without CUDA, whatever this one has
    out = tmp_path / "PERFORMANCE.md"
    assert runner.main(["--only", "startup", "gpu", "--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert "## Start-up (`stanchat --help`)" in text and "`python benchmarks/startup.py --repeats 5`" in text
    assert "Not measured (skipped): no GPU on this machine" in text and "Quick run" in text
    assert "| GPU | none lent" in text
    bad_arguments = dataclasses.replace(get_benchmark("startup"), full=("--repeats", "x"))
    broken = runner.run_one(bad_arguments, False, False, 60)
    assert broken.result.status == "failed" and "exit status 2" in broken.result.reason
    assert broken.result.notes == ["`stanchat --help` < 0.3 s"]  # the target it did not judge, for the page


def test_format_value():
    assert format_value(1.2345, "x") == "1.23x" and format_value(1.3, "x") == "1.30x"
    assert format_value(264.2, "MiB") == "264 MiB" and format_value(1234.5, "MiB") == "1,234 MiB"
    assert format_value(0.0456, "s") == "0.0456 s" and format_value(12, "frames") == "12 frames"
    assert format_value(0, "") == "0"
    assert Target("<", 0.3).text("s") == "< 0.3 s" and Target(">=", 10).text("x") == ">= 10x"


@pytest.mark.parametrize("preset, stan_tokens", [("llava-next-vicuna-7b", 4 + 1), ("llava-v1-7b-lightening", 4)])
def test_gpu_preset_toy_runs_that_family(preset, stan_tokens, tmp_path, capsys):
    """--toy --preset: the preset's family at toy sizes (LLaVA-NeXT adds its image_newline; v1's linear projector)."""
    from benchmarks import gpu

    out = tmp_path / "gpu.json"
    assert gpu.main([*TOY_ARGV["gpu"], "--preset", preset, "--precisions", "dense", "--json", str(out)]) == 0
    result = Result.load(out)
    assert result.data["weights"] == "random" and preset in result.setup
    assert {r["video_tokens"] for r in result.data["runs"] if r["mode"] == "stan"} == {stan_tokens}


def test_every_preset_has_its_real_shapes_for_the_gpu_suite():
    from benchmarks.gpu import PRESET_SHAPES, bench_shape, build_parser, real_weights
    from stanchat.pretrained import PRESETS

    assert sorted(PRESET_SHAPES) == sorted(name for name, p in PRESETS.items() if not p.bundled)
    assert PRESET_SHAPES["llava-v1-7b-lightening"].image_size == 224 and PRESET_SHAPES["llava-1.5-7b"].image_size == 336
    args = build_parser().parse_args(["--preset", "llava-next-mistral-7b", "--device", "cpu"])
    assert bench_shape(args).llm_kv_heads == 8 and bench_shape(args).family == "llava-next"
    assert not real_weights(args, torch.device("cpu"))  # no GPU: random weights at the real shapes
