"""The lmms-eval environment the lmms tests run in (.venv-lmms, made by scripts/test): under CI a
missing one fails the test, elsewhere it skips it."""

from pathlib import Path

from tests.api_helpers import side_python

ROOT = Path(__file__).resolve().parents[2]


def lmms_python() -> str:
    return side_python(".venv-lmms", "lmms-eval")
