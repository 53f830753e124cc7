"""Encoded video bytes (a WebDataset sample, a tar member) as a file the decoders can open.

Every decoder stanchat uses (decord, PyAV, the container prober) reads a path, and decoding runs in
the watchdog's worker process, so bytes go through a short-lived file: the same decode, the same
checks and the same timeout as any file. The file lives in /dev/shm when that is writable and has
room (memory, no disk traffic), else in the system's temporary folder; it is private (0600) and
deleted as soon as the caller is done.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from stanchat.errors import VideoError

RAM_FOLDER = "/dev/shm"


@contextmanager
def spooled(data: bytes, suffix: str) -> Iterator[str]:
    """`data` written to a private temporary file named `stanchat-*<suffix>` (e.g. ".mp4"), yielded
    as its path and deleted afterwards. VideoError (one line) when no folder can take it."""
    path = _write(data, suffix)
    try:
        yield path
    finally:
        os.unlink(path)


def _write(data: bytes, suffix: str) -> str:
    error: OSError | None = None
    for folder in _folders():
        try:
            fd, path = tempfile.mkstemp(prefix="stanchat-", suffix=suffix, dir=folder)
        except OSError as err:
            error = err
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return path
        except OSError as err:  # e.g. a small /dev/shm (Docker's default is 64 MB): try the next folder
            os.unlink(path)
            error = err
    raise VideoError(f"cannot write a temporary copy of a {len(data)}-byte video ({error}); free some space in "
                     f"{tempfile.gettempdir()} or set TMPDIR")


def _folders() -> list[str | None]:
    """/dev/shm when writable, then the system's temporary folder (None: tempfile's choice)."""
    ram = os.path.isdir(RAM_FOLDER) and os.access(RAM_FOLDER, os.W_OK)
    return [RAM_FOLDER, None] if ram else [None]
