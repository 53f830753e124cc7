"""What the command line shows of logging: stanchat's own warnings once per cause, library chatter
only with `--debug`.

Libraries stanchat loads talk a lot on stderr: bitsandbytes' int8 matmul logs "inputs will be cast
to float16" on every call (84 lines for one short answer), its CPU backend says it could not load a
kernels-community kernel, transformers and PyTorch emit `warnings.warn` deprecations. None of it
needs the user's attention, and on a terminal it lands in the middle of a streamed answer. So:
- records of loggers outside stanchat (and Python warnings, captured into the `py.warnings`
  logger) below ERROR go to the debug view only;
- a stanchat warning is shown once per cause: the logger and the message template, before its
  arguments are filled in ("decoder %s failed on %s" once, whatever the file);
- transformers, which logs through a handler of its own, is set to errors only (TRANSFORMERS_VERBOSITY);
- `--debug` shows everything, every time.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

OWN_LOGGERS = ("stanchat", "training", "benchmarks", "__main__")  # loggers whose warnings the user sees
FORMAT = "stanchat: %(levelname)s: %(message)s"


class OncePerCause(logging.Filter):
    """Lets a record through when debugging, or when it is stanchat's own (or a library's ERROR) and
    its (logger, template, level) was not shown before."""

    def __init__(self, debug: bool):
        super().__init__()
        self.debug = debug
        self.seen: set[tuple[str, str, int]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.debug:
            return True
        own = record.name.split(".")[0] in OWN_LOGGERS
        if not own and record.levelno < logging.ERROR:
            return False
        cause = (record.name, str(record.msg), record.levelno)
        if cause in self.seen:
            return False
        self.seen.add(cause)
        return True


class StderrHandler(logging.StreamHandler):
    """Writes to `stream`, or to whatever `sys.stderr` is when a record comes (so a test's captured
    stderr, or a redirected one, is honoured after the handler was made)."""

    def __init__(self, stream: TextIO | None = None):
        super().__init__(stream)
        self.target = stream

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = self.target or sys.stderr
        super().emit(record)


def configure(debug: bool, stream: TextIO | None = None) -> logging.Handler:
    """Install the command line's one log handler on the root logger (replacing one installed
    before, leaving other handlers alone) and capture Python warnings into logging."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "stanchat_cli", False):
            root.removeHandler(handler)
    handler = StderrHandler(stream)
    handler.stanchat_cli = True
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(OncePerCause(debug))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.captureWarnings(True)
    if not debug:  # transformers logs through a handler of its own, not the root's: quiet it at the source
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return handler
