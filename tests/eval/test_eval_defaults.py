"""`stanchat eval` with its default options on the bundled model, without matplotlib, and with an
--out that cannot be a folder: results, never a traceback, nothing computed lost."""

import json
import logging
import sys

import pytest

from stanchat.cli import main
from tests.evalkit import FRAMES, error_line, write_reverse_jsonl, write_synthetic

BUNDLED_TEXT_LENGTH = 24  # stanchat/presets/tiny/stan: the text tower's max_position_embeddings


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("evaldefaults")
    return {"retrieval": write_synthetic(root / "retrieval", "jsonl", task="retrieval"),
            "recognition": write_synthetic(root / "recognition", "jsonl", task="recognition"),
            "reverse": write_reverse_jsonl(root / "reverse")}


def argv(task: str, data: dict, out, *extra: str) -> list[str]:
    if task == "reverse":
        inputs = ["--data", str(data["reverse"])]
    else:
        inputs = ["--dataset", "jsonl", "--data-root", str(data[task].root)]
    return ["eval", task, *inputs, "--model", "tiny", "--frames", FRAMES, "--out", str(out), "--no-cache",
            "--workers", "0", *extra]


@pytest.mark.parametrize("task", ["retrieval", "recognition", "reverse"])
def test_default_tokens_fit_the_bundled_model(data, tmp_path, task):
    assert main(argv(task, data, tmp_path / "out")) == 0
    results = json.loads((tmp_path / "out" / f"{task}.json").read_text())
    assert results["settings"]["tokens"] == BUNDLED_TEXT_LENGTH  # the model's length: it has fewer than 32


def test_an_explicit_token_count_that_does_not_fit_is_still_refused(data, tmp_path, capsys):
    assert main(argv("retrieval", data, tmp_path / "out", "--tokens", str(BUNDLED_TEXT_LENGTH + 1))) == 2
    assert f"--tokens {BUNDLED_TEXT_LENGTH + 1} does not fit the text tower's 24 positions" in error_line(
        capsys.readouterr().err)


def test_without_matplotlib_results_are_written_and_the_plot_skipped_with_one_warning(
        data, tmp_path, monkeypatch, capsys, caplog):
    from stanchat.eval import report

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib...` raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    report.can_plot.cache_clear()
    out = tmp_path / "out"
    out.mkdir()
    (out / "retrieval.png").write_bytes(b"an earlier run's plot")
    try:
        with caplog.at_level(logging.WARNING):
            assert main(argv("retrieval", data, out)) == 0
    finally:
        report.can_plot.cache_clear()
    assert json.loads((out / "retrieval.json").read_text())["metrics"]["text_to_video"]["R@1"] >= 0
    assert "| text to video |" in (out / "retrieval.md").read_text()
    assert not (out / "retrieval.png").exists()  # the stale plot is not left beside new results
    warnings = [r.getMessage() for r in caplog.records if "matplotlib" in r.getMessage()]
    assert len(warnings) == 1 and "pip install 'stanchat[eval]'" in warnings[0]
    assert "no plot: matplotlib is not installed" in capsys.readouterr().out


@pytest.mark.parametrize("task", ["retrieval", "reverse"])
@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_an_out_that_cannot_be_a_folder_is_one_line_before_any_work(data, tmp_path, capsys, monkeypatch,
                                                                    task, where):
    import stanchat.eval.model

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before --out was checked")

    monkeypatch.setattr(stanchat.eval.model, "load_eval_model", no_model)
    file = tmp_path / "taken"
    file.write_text("x")
    out = file if where == "file" else file / "x"
    assert main(argv(task, data, out)) == 2
    line = error_line(capsys.readouterr().err)
    assert f"--out {out}" in line and ("is a file" in line if where == "file" else "cannot create" in line)


def test_an_out_under_a_system_file_is_one_line(data, capsys):
    if not __import__("os").path.isfile("/etc/passwd"):
        pytest.skip("no /etc/passwd here")
    assert main(argv("retrieval", data, "/etc/passwd/x")) == 2
    assert "--out /etc/passwd/x: cannot create this folder" in error_line(capsys.readouterr().err)
