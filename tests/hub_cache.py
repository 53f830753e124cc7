"""A Hugging Face hub cache written by the test itself (never the network).

Laid out as huggingface_hub lays out its cache: `models--owner--name/blobs/<sha256>`,
`refs/<revision>` holding the commit, `snapshots/<commit>/<file>` linking to the blob. Point
huggingface_hub at it with `use_cache(monkeypatch, path)`; HF_HUB_OFFLINE=1 (tests/conftest.py)
makes every lookup local. `FakeHub` stands a hub with downloads behind it, so a test can see a
first download, what it fetched and what it found cached.
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


class FakeHub:
    """A hub the test fills (`repos`: repo -> {name: bytes or file}; a key `repo@revision` holds another
    revision than main) behind huggingface_hub's own
    download calls: `hf_hub_download` and `snapshot_download` first store in the cache the requested
    files that are on this hub and not cached yet (a download, recorded in `downloaded`), then run as
    they do offline, reading the cache. A repo that is not here is missing as on an offline machine."""

    def __init__(self, monkeypatch, cache: Path, repos: dict[str, dict[str, bytes | Path]]):
        import huggingface_hub

        self.cache, self.repos, self.downloaded = cache, repos, []
        hf_hub_download, snapshot_download = huggingface_hub.hf_hub_download, huggingface_hub.snapshot_download

        def file(repo_id, filename, *args, revision="main", **kwargs):
            self._fetch(repo_id, [filename], revision)
            return hf_hub_download(repo_id, filename, *args, revision=revision, **kwargs)

        def snapshot(repo_id, *args, allow_patterns=None, ignore_patterns=None, local_files_only=False, **kwargs):
            from huggingface_hub.utils import filter_repo_objects

            if not local_files_only:
                names = filter_repo_objects(self.repos.get(repo_id, {}), allow_patterns=allow_patterns,
                                            ignore_patterns=ignore_patterns)
                self._fetch(repo_id, list(names), "main")
            return snapshot_download(repo_id, *args, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns,
                                     local_files_only=local_files_only, **kwargs)

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", file)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)

    def _fetch(self, repo: str, names: list[str], revision: str) -> None:
        from huggingface_hub import try_to_load_from_cache

        on_hub = self.repos.get(repo, {}) if revision == "main" else self.repos.get(f"{repo}@{revision}", {})
        new = {name: on_hub[name] for name in names
               if name in on_hub and not isinstance(try_to_load_from_cache(repo, name, revision=revision), str)}
        if new:
            put(self.cache, repo, new, revision)
            self.downloaded += [(repo, name) for name in new]
