"""The stanchat chat app, run from a checkout: `python demo/app.py --llava DIR --stan DIR [--port N]`.

The app itself lives in the package (`stanchat.app`), because demo/ is not installed with stanchat
and a pip-installed stanchat must still be able to `stanchat serve`. This file is the checkout's
entry point: `main(argv)` is `stanchat serve`, and `build_app` is re-exported for scripts that
launch their own app (see `stanchat.app.server.launch`).
"""

from __future__ import annotations

import sys

from stanchat.app.ui import build_app
from stanchat.cli import main as cli_main

__all__ = ["build_app", "main"]


def main(argv: list[str] | None = None) -> int:
    """`stanchat serve` with these arguments (default: the command line's)."""
    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
