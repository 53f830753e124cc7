"""The output folder a command writes into (`--out`), made before any work starts, so a path that
cannot be a folder (an existing file, a path under a file, no permission) is one line naming the
fix, not a traceback after the work is done."""

from __future__ import annotations

import os
from pathlib import Path

from stanchat.errors import StanchatError


def make_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create folder `path` (and its parents) if needed and check it can be written into."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise StanchatError(f"{option} {out} is a file, not a folder; name a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StanchatError(f"{option} {out}: cannot create this folder ({err.strerror or err}); "
                            f"name a folder you can write to") from err
    if not os.access(out, os.W_OK | os.X_OK):
        raise StanchatError(f"{option} {out}: this folder is not writable; name a folder you can write to")
    return out
