"""A vLLM-ready copy of a LLaVA directory: the same files, the tower's weights renamed.

vLLM's LLaVA loads the CLIP tower as `CLIPVisionModel` (`vision_tower.vision_model.*`), while
transformers saves LLaVA's tower as `CLIPVisionTransformer` (`vision_tower.*` or, since 4.52,
`model.vision_tower.*`). The copy lives in `$STANCHAT_HOME/vllm/`, in a folder named by the
source's fingerprint (its path, and each weight file's size and modification time), so it is
written once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

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
    from safetensors.torch import load_file, save_file

    source = Path(directory)
    target = vllm_dir(source)
    if (target / "config.json").is_file():
        return target
    weights = sorted(source.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{source} has no .safetensors weights to export for vLLM")
    partial = target.with_name(target.name + f".{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors") and path.name != INDEX:
            shutil.copy2(path, partial / path.name)
    renamed = 0
    for path in weights:
        tensors = load_file(path)
        out = {rename(k): v for k, v in tensors.items()}
        renamed += sum(k != rename(k) for k in tensors)
        save_file(out, partial / path.name, metadata={"format": "pt"})
    if (source / INDEX).is_file():
        index = json.loads((source / INDEX).read_text())
        index["weight_map"] = {rename(k): v for k, v in index["weight_map"].items()}
        (partial / INDEX).write_text(json.dumps(index, indent=2))
    if renamed == 0:
        logger.warning("no tower weights renamed in %s: already in vLLM's layout?", source)
    os.replace(partial, target)
    logger.info("exported %s for vLLM to %s (%d tower tensors renamed)", source, target, renamed)
    return target
