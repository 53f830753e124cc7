"""The lmms-eval environment the lmms tests run in (.venv-lmms, made by scripts/test): under CI a
missing one fails the test, elsewhere it skips it."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LMMS_PYTHON = ROOT / ".venv-lmms" / "bin" / "python"


def lmms_python() -> str:
    if not LMMS_PYTHON.exists():
        message = f"no lmms-eval environment at {LMMS_PYTHON}; scripts/test creates it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(LMMS_PYTHON)
