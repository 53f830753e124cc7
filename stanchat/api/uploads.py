"""Uploads owned by their request, and upload folders owned by their process.

A server's upload folder (the service's spool, `stanchat-api-*` in the temporary folder) is claimed
by its process with a lock file held open for the process's life: the kernel drops the lock however
the process ends, `kill -9` included, so `clear_orphans` at the next start removes exactly the
folders whose server is gone. Each data URL is written under a name of its own (`MediaResolver`),
recorded in its request's `Uploads` (the HTTP layer runs a request's work `within` them) and
deleted when the request ends, answered, refused, timed out or abandoned.
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import IO, Callable, TypeVar

logger = logging.getLogger(__name__)

SPOOL_PREFIX = "stanchat-api-"  # the names of servers' upload folders (ChatService's spool) in the temporary folder
OWNER = ".owner"  # in an upload folder: locked by its server's process, and holding its pid

T = TypeVar("T")
_CURRENT: contextvars.ContextVar["Uploads | None"] = contextvars.ContextVar("stanchat_uploads", default=None)


class Uploads:
    """The files one request wrote; `remove()` deletes them (thread-safe, idempotent)."""

    def __init__(self) -> None:
        self._paths: list[Path] = []
        self._lock = threading.Lock()

    def add(self, path: Path) -> None:
        with self._lock:
            self._paths.append(path)

    def remove(self) -> None:
        with self._lock:
            paths, self._paths = self._paths, []
        for path in paths:
            path.unlink(missing_ok=True)


def within(uploads: Uploads, work: Callable[..., T], *args) -> T:
    """`work(*args)` with the files it uploads recorded in `uploads` (run it in the worker thread)."""
    token = _CURRENT.set(uploads)
    try:
        return work(*args)
    finally:
        _CURRENT.reset(token)


def record(path: Path) -> None:
    """Give `path` to the current request's uploads (nothing outside a request: the caller deletes it)."""
    uploads = _CURRENT.get()
    if uploads is not None:
        uploads.add(path)


def claim(folder: Path) -> IO | None:
    """Mark `folder` as this process's while the returned file stays open (None where there is no
    flock). The lock is taken on a file of another name and then renamed into place, so that
    `clear_orphans` never sees an OWNER file that is not locked yet."""
    try:
        import fcntl
    except ImportError:
        return None
    staging = folder / f"{OWNER}.{os.getpid()}"
    handle = open(staging, "w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    os.replace(staging, folder / OWNER)
    return handle


def clear_orphans(parent: str | os.PathLike) -> int:
    """Remove this user's upload folders under `parent` whose OWNER lock no process holds; their count."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing can tell a dead server's folder from a live one's
        return 0
    cleared = 0
    for entry in os.scandir(parent):
        if not entry.name.startswith(SPOOL_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        if entry.stat(follow_symlinks=False).st_uid != os.getuid():
            continue
        try:
            fd = os.open(os.path.join(entry.path, OWNER), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # no owner file: a server of an older stanchat, or one still starting
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its server is alive
            continue
        finally:
            os.close(fd)
        shutil.rmtree(entry.path, ignore_errors=True)
        cleared += 1
    return cleared
