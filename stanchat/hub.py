"""Where model files come from: a local directory, or a hub id resolved from the local cache.

One place turns "not there" into a one-line `WeightsError` that says how to get the files,
so every loader fails the same way offline; and one place says whether the hub cache holds a whole
model (`hub_cached`: read by `stanchat.pretrained.resolve` to list a preset's LLaVA as missing).
Imports nothing heavy (huggingface_hub only inside the functions).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stanchat.errors import WeightsError

WEIGHTS, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"  # a transformers checkpoint's weights


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


def hub_cached(repo: str) -> bool:
    """Whether the hub cache holds `repo`'s config.json and all of its weights (model.safetensors,
    or every shard its index names); a repo whose download stopped after the config is not cached."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> str | None:
        found = try_to_load_from_cache(repo, name)
        return found if isinstance(found, str) else None

    if cached("config.json") is None:
        return False
    if cached(WEIGHTS) is not None:
        return True
    index = cached(WEIGHTS_INDEX)
    if index is None:
        return False
    try:
        shards = set(json.loads(Path(index).read_text())["weight_map"].values())
    except (ValueError, KeyError, TypeError, AttributeError):
        return False  # a damaged index: let the download fetch it again
    return all(cached(shard) is not None for shard in shards)
