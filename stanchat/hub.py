"""Where model files come from: a local directory, or a hub id resolved from the local cache.

One place turns "not there" into a one-line `WeightsError` that says how to get the files,
so every loader fails the same way offline.
"""

from __future__ import annotations

import os
from pathlib import Path

from stanchat.errors import WeightsError


def resolve_model_dir(name_or_path: str | os.PathLike, what: str = "model") -> Path:
    """Return a local directory holding `name_or_path`'s files.

    A path that exists is used as it is. Anything else is taken as a hub id and fetched (or, with
    HF_HUB_OFFLINE=1, found in the local cache). Failure raises one line naming the fix.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise WeightsError(f"{what} path {path} is a file; pass the directory that holds config.json and the weights")
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise WeightsError(f"{what} directory {name} does not exist; pass an existing directory or a hub id like org/name")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(name))
    except HFValidationError as err:
        raise WeightsError(f"{what} {name!r} is neither a directory nor a valid hub id ({err})") from err
    except Exception as err:  # offline, not cached, gated, network: all mean "files not here"
        raise WeightsError(
            f"{what} {name!r} is not in the local cache and could not be downloaded ({type(err).__name__}); "
            f"run `hf download {name}` on a machine with network, or pass a local directory"
        ) from err
