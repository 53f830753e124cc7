"""Scoring and temporal modes are set once, in torch-free stanchat.options; every other module and
every command-line choice uses that very tuple."""

import argparse
import subprocess
import sys
from pathlib import Path

from stanchat import options
from stanchat.cli import build_parser


def choices(parser: argparse.ArgumentParser, *path: str) -> dict[str, tuple]:
    """{dest: choices} of the (sub)command reached by `path`, e.g. ("eval", "retrieval")."""
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return {a.dest: tuple(a.choices) for a in parser._actions if a.choices and not isinstance(a, argparse._SubParsersAction)}


def test_scoring_modes_are_one_tuple():
    from stanchat import videoclip, videomodel
    from stanchat.eval import config as eval_config
    from training import config as train_config

    for module in (videomodel, videoclip, eval_config, train_config):
        assert module.SCORING_MODES is options.SCORING_MODES, module.__name__
    parser = build_parser()
    for task in ("retrieval", "recognition", "reverse"):
        assert choices(parser, "eval", task)["scoring"] == options.SCORING_MODES


def test_temporal_modes_are_one_tuple():
    import stanchat.commands.eval as eval_command

    assert eval_command.TEMPORAL_MODES is options.TEMPORAL_MODES
    parser = build_parser()
    for path in (("eval", "videoqa"), ("eval", "reverse"), ("ask",), ("chat",)):
        assert choices(parser, *path)["temporal"] == options.TEMPORAL_MODES, path


def test_the_modes_module_imports_no_torch():
    code = "import sys, stanchat.options, stanchat.eval.config; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
