"""A vLLM-ready copy of a LLaVA directory: the same files, the tower's weights renamed.

vLLM's LLaVA loads the CLIP tower as `CLIPVisionModel` (`vision_tower.vision_model.*`), while
transformers saves LLaVA's tower as `CLIPVisionTransformer` (`vision_tower.*` or, since 4.52,
`model.vision_tower.*`). The copy lives in `$STANCHAT_HOME/vllm/`, in a folder named by the
source's fingerprint (its path, and each weight file's size and modification time), so it is
written once: as fetch.py installs a conversion (under a lock file, into a `.partial-*` folder
renamed into place), so two exports at once write it once and a failed one leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from stanchat.fetch import install, install_lock, new_partial, recover
from stanchat.pretrained import stanchat_home

logger = logging.getLogger(__name__)

TOWER_PREFIXES = ("model.vision_tower.", "vision_tower.")
INDEX = "model.safetensors.index.json"


def rename(key: str) -> str:
    """`vision_tower.X` -> `vision_tower.vision_model.X` (either prefix); other keys unchanged."""
    for prefix in TOWER_PREFIXES:
        if key.startswith(prefix) and not key.startswith(prefix + "vision_model."):
            return prefix + "vision_model." + key[len(prefix):]
    return key


def fingerprint(directory: Path) -> str:
    digest = hashlib.sha256(str(directory.resolve()).encode())
    for path in sorted(directory.glob("*.safetensors")):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def vllm_dir(source: Path) -> Path:
    """Where the vLLM-ready copy of LLaVA folder `source` lives."""
    return stanchat_home() / "vllm" / f"{source.name}-{fingerprint(source)}"


def export_for_vllm(directory: str | os.PathLike) -> Path:
    """The vLLM-ready copy of LLaVA `directory` (made now if missing); returns its folder."""
    source = Path(directory)
    target = vllm_dir(source)
    if (target / "config.json").is_file():
        return target
    weights = sorted(source.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{source} has no .safetensors weights to export for vLLM")
    with install_lock(target):
        recover(target)
        if not (target / "config.json").is_file():  # else another export made it while this one waited
            partial = new_partial(target)
            try:
                renamed = _write(source, weights, partial)
            except BaseException:  # a full disk, Ctrl-C: nothing half-made stays
                shutil.rmtree(partial, ignore_errors=True)
                raise
            install(partial, target)
            logger.info("exported %s for vLLM to %s (%d tower tensors renamed)", source, target, renamed)
    return target


def _write(source: Path, weights: list[Path], out: Path) -> int:
    """Copy LLaVA folder `source` into `out`, the tower's keys renamed; returns how many were."""
    from safetensors.torch import load_file, save_file

    for path in source.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors") and path.name != INDEX:
            shutil.copy2(path, out / path.name)
    renamed = 0
    for path in weights:
        tensors = load_file(path)
        renamed += sum(k != rename(k) for k in tensors)
        save_file({rename(k): v for k, v in tensors.items()}, out / path.name, metadata={"format": "pt"})
    if (source / INDEX).is_file():
        index = json.loads((source / INDEX).read_text())
        index["weight_map"] = {rename(k): v for k, v in index["weight_map"].items()}
        (out / INDEX).write_text(json.dumps(index, indent=2))
    if renamed == 0:
        logger.warning("no tower weights renamed in %s: already in vLLM's layout?", source)
    return renamed
