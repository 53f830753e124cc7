import subprocess
import sys
from pathlib import Path

import pytest

from stanchat.cli import main

REPO = Path(__file__).resolve().parents[1]


def _run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_is_light():
    code = "import sys, stanchat; print(sorted(m for m in ('torch', 'transformers', 'gradio') if m in sys.modules))"
    assert _run_python(code) == "[]"


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"]])  # serve's reads the app's settings
def test_help_is_light(argv):
    code = (
        "import sys\nfrom stanchat.cli import main\n"
        f"try:\n    main({argv})\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in ('torch', 'transformers', 'gradio', 'numpy') if m in sys.modules))"
    )
    assert _run_python(code).splitlines()[-1] == "LOADED []"


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_command_exits_2():
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
