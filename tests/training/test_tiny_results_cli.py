"""`python -m training.recipes.tiny_results SUBCOMMAND`: one module per subcommand, and a missing
input is one line with exit code 2 before any model loads (the measurements themselves are tested
on a recipe run in test_tiny_recipe.py)."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from training.recipes.tiny_results import SUBCOMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_every_subcommand_is_its_own_module():
    assert len(SUBCOMMANDS) == 8
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"training.recipes.tiny_results.{name}")
        assert module.HELP and module.__doc__ and callable(module.add_arguments) and callable(module.run)
    help_text = build_parser().format_help()
    assert all(name in help_text for name in SUBCOMMANDS)


@pytest.mark.parametrize("argv, expected", [
    (["contrast", "--model", "{tmp}/model", "--probe", "{tmp}/probe.jsonl"], "probe.jsonl does not exist; pass --probe"),
    (["paired", "--first", "{tmp}/a:mug", "--second", "{tmp}/b:mean", "--probe", "{tmp}/p.jsonl"], "does not exist"),
    (["videoqa", "--preset", "{tmp}", "--probe", "{tmp}/probe.jsonl"], "does not exist; pass --probe"),
    (["trail", "--run", "{tmp}"], "recipe.json does not exist; pass --run"),
    (["stills", "--run", "{tmp}"], "recipe.json does not exist; pass --run"),
    (["shapes", "--run", "{tmp}"], "recipe.json does not exist; pass --run"),
    (["describe", "--run", "{tmp}"], "recipe.json does not exist; pass --run"),
])
def test_a_missing_input_is_one_line_with_exit_2(tmp_path, capsys, argv, expected):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tiny_results: error: ") and expected in err


def test_the_module_runs_as_before_and_a_bad_option_is_a_usage_error(tmp_path):
    def run(*argv):
        return subprocess.run([sys.executable, "-m", "training.recipes.tiny_results", *argv], cwd=ROOT,
                              capture_output=True, text=True)

    done = run("stills", "--run", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr and "recipe.json does not exist" in done.stderr
    assert run("contrast", "--scoring", "best").returncode == 2
