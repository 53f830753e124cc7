"""A Hugging Face hub cache written by the test itself (never the network).

Laid out as huggingface_hub lays out its cache: `models--owner--name/blobs/<sha256>`,
`refs/<revision>` holding the commit, `snapshots/<commit>/<file>` linking to the blob. Point
huggingface_hub at it with `use_cache(monkeypatch, path)`; HF_HUB_OFFLINE=1 (tests/conftest.py)
makes every lookup local.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def use_cache(monkeypatch, cache: Path) -> Path:
    """Make huggingface_hub read `cache` (its constants are read at import, so patch them too)."""
    import huggingface_hub.constants as constants

    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def put(cache: Path, repo: str, files: dict[str, bytes | Path] | Path, revision: str = "main") -> Path:
    """Store `files` (name -> bytes or a file to copy; or every file of a directory) as `repo` at
    `revision`; returns the snapshot folder."""
    if isinstance(files, Path):
        files = {str(p.relative_to(files)): p for p in sorted(files.rglob("*")) if p.is_file()}
    storage = cache / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    snapshot = storage / "snapshots" / commit
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / revision).write_text(commit)
    return snapshot
