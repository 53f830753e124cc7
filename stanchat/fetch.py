"""First use fetches: a preset's released STAN, and an original-layout LLaVA v1, from the hub,
converted once into `$STANCHAT_HOME`.

Fetching fills a resolved `stanchat.pretrained.ModelSpec`: `resolve` has already worked out every
path and which parts are missing, and `ensure(spec)` (once per command; `stanchat.load` calls it
itself only for a spec with missing parts) fetches those and returns the spec with none missing.
Data flows one way: this module imports `stanchat.pretrained` (the registry, its paths and the spec),
never the reverse; the step functions (`ensure_stan`, `ensure_llava`) take the spec's preset.

A missing part is downloaded with `huggingface_hub` (its cache, resumable downloads, its progress
bar), converted as `stanchat convert official` / `stanchat convert llava` convert it into a uniquely
named `<dir>.partial-*` folder, and renamed into place (an older one set aside first and deleted
last), so an interrupted conversion never looks done and never loses the one before. A lock file
beside the folder makes two first uses at once (`serve` and `ask`) convert once: the second waits
and loads the first one's result. Every failure is one `WeightsError` line naming the hub repo, the
file, the `hf download` command and the `stanchat convert` command that do the same by hand.
`pull` (`stanchat pull`) fetches every part of a spec ahead of time, reporting those already here.
A transformers-native LLaVA not in the hub cache is downloaded here (its progress bars show); a
cached one is left to `from_pretrained`. A fetched STAN's origin.json records how far its tower is
from the stock CLIP once the stock weights are cached.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from stanchat.errors import WeightsError
from stanchat.hub import hub_cached  # noqa: F401  (moved to stanchat.hub; still importable from here)
from stanchat.pretrained import (CLIP_CONFIG_FILES, ORIGIN_FILE, ModelSpec, Preset, clip_download, fetch_commands,
                                 preset_llava, preset_stan_dir, read_origin, stan_is_converted, stan_ready, to_spec)

logger = logging.getLogger(__name__)

DEFAULT_REVISION = "main"
# the tower files an original-layout LLaVA v1 conversion reads (its weights come from the CLIP checkpoint)
TOWER_FILES = ["config.json", "preprocessor_config.json", "model.safetensors"]
SKIPPED_FORMATS = ["*.h5", "*.msgpack", "*.ot", "*.onnx"]  # other frameworks' copies of the same weights
STOCK_NOT_CACHED = "the stock weights are not in the local hub cache"  # origin.json: measure once they are


@dataclass(frozen=True)
class Download:
    """A hub file or snapshot a part was made from, where it sits in the hub cache, and its size."""

    what: str  # e.g. "Mug-StanL14.bin from farewellthree/Mug_STAN_Weight (main)"
    path: Path  # the file, or the snapshot folder, in the hub cache
    bytes: int  # its size on disk (of a snapshot: the files requested from it, not every file it holds)
    new: bool  # downloaded by this call, in part or whole (False: it was in the hub cache already)


@dataclass(frozen=True)
class Fetched:
    """One part of a preset and where it lives now."""

    what: str  # e.g. "STAN (Mug-StanL14.bin from farewellthree/Mug_STAN_Weight)"
    path: Path  # the local directory (or file) it is in
    bytes: int  # its size on disk
    new: bool  # fetched or converted by this call (False: it was already there)
    downloads: tuple[Download, ...] = ()  # what a conversion by this call read from the hub


def size_text(n: int) -> str:
    """Bytes for people: 2.01 GB, 35.2 MB, 712.0 kB, 12 B (powers of 1000, as the hub shows sizes)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{n} B"


def disk_size(path: Path) -> int:
    """Bytes of a file or of every file under a directory (hub snapshots: the blobs they link to)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def hub_file(repo: str, filename: str, revision: str, fix: str) -> Download:
    """`filename` of the hub `repo` at `revision`, downloaded (resumably) or found in the hub cache."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(repo, filename, revision=revision), str)
    try:
        path = Path(hf_hub_download(repo, filename, revision=revision))
    except Exception as err:  # offline and not cached, refused, gated, not found, network down
        raise WeightsError(f"cannot fetch {filename} from the hub repo {repo} at revision {revision} "
                           f"({type(err).__name__}); {fix}") from err
    return Download(f"{filename} from {repo} ({revision})", path, path.stat().st_size, new=not cached)


def hub_snapshot(repo: str, fix: str, files: list[str] | None = None) -> Download:
    """The local snapshot folder of the hub `repo` (main) holding `files` (exact names; None: every file
    but other frameworks' copies). Its `new` and `bytes` are those of the requested files alone: the
    folder may hold others an earlier call fetched (a tower's weights beside its config files)."""
    from huggingface_hub import snapshot_download

    patterns = dict(allow_patterns=files, ignore_patterns=None if files else SKIPPED_FORMATS)
    cached = _cached_files(repo, files, patterns)
    try:
        path = Path(snapshot_download(repo, **patterns))
    except Exception as err:  # offline and not cached, refused, gated, not found, network down
        raise WeightsError(f"cannot fetch the hub repo {repo} ({type(err).__name__}); {fix}") from err
    wanted = _snapshot_files(path, patterns)
    what = repo + (f" ({', '.join(files)})" if files else "")
    return Download(what, path, sum((path / name).stat().st_size for name in wanted), new=bool(wanted - cached))


def _cached_files(repo: str, files: list[str] | None, patterns: dict) -> set[str]:
    """Which of the requested files the hub cache holds for `repo` (main) before a download."""
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    if files:
        return {name for name in files if isinstance(try_to_load_from_cache(repo, name), str)}
    try:  # the whole repo: its names are known only to the hub, so whatever the cached snapshot holds
        return _snapshot_files(Path(snapshot_download(repo, local_files_only=True, **patterns)), patterns)
    except Exception:  # nothing cached, or a snapshot the hub cache knows to be incomplete
        return set()


def _snapshot_files(snapshot: Path, patterns: dict) -> set[str]:
    """The files of a snapshot folder that `patterns` select, as paths relative to it."""
    from huggingface_hub.utils import filter_repo_objects

    names = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
    return set(filter_repo_objects(names, **patterns))


@contextmanager
def install_lock(out: Path):
    """One conversion into `out` at a time, across threads and processes (`serve` and `ask` started
    together on a fresh machine): a later one waits here, then finds the first one's result."""
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(f".{out.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, also if this process dies
        yield


def recover(out: Path) -> None:
    """Under the lock, what a crashed conversion left: its unfinished folders go, and an older
    conversion set aside by `install` but not yet replaced goes back in place."""
    for partial in out.parent.glob(f"{out.name}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)
    asides = sorted(out.parent.glob(f"{out.name}.old-*"))  # named by time: the last is the newest
    if asides and not out.exists():
        logger.warning("restoring %s from %s (an earlier conversion stopped while installing)", out, asides[-1])
        os.replace(asides.pop(), out)
    for aside in asides:
        shutil.rmtree(aside, ignore_errors=True)


def new_partial(out: Path) -> Path:
    """A new, uniquely named folder beside `out` to convert into."""
    return Path(tempfile.mkdtemp(prefix=f"{out.name}.partial-", dir=out.parent))


def install(partial: Path, final: Path) -> None:
    """Put a finished conversion in place. A folder cannot replace a folder in one rename, so an older
    one is renamed aside first and deleted only once the new one is in: a crash in between leaves the
    older one aside, and `recover` puts it back. Readers see a whole folder or none."""
    aside = final.with_name(f"{final.name}.old-{time.time_ns()}")
    if final.exists():
        os.replace(final, aside)
    os.replace(partial, final)
    shutil.rmtree(aside, ignore_errors=True)


def ensure_stan(preset: Preset, revision: str | None = None) -> Fetched:
    """The preset's converted STAN directory, fetching and converting the released file if it is not
    there yet (or was converted from another revision than a pinned `revision`)."""
    out = preset_stan_dir(preset)
    if preset.bundled and stan_is_converted(out):
        return Fetched("STAN (bundled)", out, disk_size(out), new=False)
    if stan_ready(out, revision):
        return Fetched(f"STAN {out.name}", out, disk_size(out), new=False)
    if not preset.stan_repo:
        raise WeightsError(f"STAN weights for preset {preset.name!r} are not in {out} and it has no hub file to fetch")
    with install_lock(out):
        recover(out)
        if not stan_ready(out, revision):  # else another process converted it while this one waited
            return _convert_stan(preset, out, revision or DEFAULT_REVISION)
    return Fetched(f"STAN {out.name}", out, disk_size(out), new=False)


def _convert_stan(preset: Preset, out: Path, revision: str) -> Fetched:
    """Fetch the released file (and the CLIP config) and convert it into `out` (under the lock)."""
    fix = fetch_commands(preset)
    checkpoint = hub_file(preset.stan_repo, preset.stan_checkpoint, revision, fix)
    clip = hub_snapshot(preset.stan_clip, f"run `{clip_download(preset)}` on a machine with network (its "
                                          f"architecture and tokenizer; no weights are read)", list(CLIP_CONFIG_FILES))
    from stanchat.convert.released import convert_official  # torch: only when converting

    partial = new_partial(out)
    logger.warning("converting %s (%s) into %s", preset.stan_checkpoint, preset.stan_repo, out)
    try:
        convert_official(checkpoint.path, clip=clip.path, out=partial)
        _write_origin(partial, {
            "repo": preset.stan_repo, "filename": preset.stan_checkpoint, "revision": revision,
            "commit": checkpoint.path.parent.name, "clip": preset.stan_clip, "bytes": checkpoint.bytes,
            "backbone_vs_stock": backbone_vs_stock(partial, preset.stan_clip)})
    except BaseException as err:  # a refused file, Ctrl-C, a full disk: nothing half-made stays
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(err, WeightsError):
            raise WeightsError(f"the cached {preset.stan_repo}/{preset.stan_checkpoint} ({checkpoint.path}) is not "
                               f"the released Mug-STAN: {err}; fetch it again with `hf download {preset.stan_repo} "
                               f"{preset.stan_checkpoint} --force-download`") from err
        raise
    install(partial, out)
    return Fetched(f"STAN ({preset.stan_checkpoint} from {preset.stan_repo}, {revision})", out, disk_size(out), new=True,
                   downloads=(checkpoint, clip))


def _write_origin(directory: Path, origin: dict) -> None:
    """origin.json in `directory`, replaced whole (a reader sees the old one or the new one)."""
    new = directory / f".{ORIGIN_FILE}.new"
    new.write_text(json.dumps(origin, indent=2))
    os.replace(new, directory / ORIGIN_FILE)


def backbone_vs_stock(converted: Path, clip_repo: str) -> dict:
    """How far the checkpoint's CLIP vision tower is from the stock `clip_repo` tower: the largest
    absolute difference over the tower's tensors. Measured only when the stock weights are already in
    the local hub cache (nothing is downloaded for this; `measure_backbone` measures once they are).
    The released Mug-STAN was post-pretrained with its tower tuned, so a graft onto the stock tower is
    not the tower it was trained with. A measurement is information only: an unreadable file is
    recorded as not measured, with why."""
    from huggingface_hub import try_to_load_from_cache

    stock = try_to_load_from_cache(clip_repo, "model.safetensors")
    if not isinstance(stock, str):
        return {"stock": clip_repo, "measured": False, "why": STOCK_NOT_CACHED}
    from safetensors import safe_open

    largest, tensors = 0.0, 0
    try:
        with safe_open(converted / "model.safetensors", "pt") as ours, safe_open(stock, "pt") as theirs:
            names = set(ours.keys())
            for name in (k for k in theirs.keys() if k.startswith("vision_model.") and "clip." + k in names):
                difference = ours.get_tensor("clip." + name).float() - theirs.get_tensor(name).float()
                largest, tensors = max(largest, float(difference.abs().max())), tensors + 1
    except Exception as err:  # a truncated or foreign stock file, another tower's shapes
        detail = next(iter(str(err).splitlines()), "")
        why = f"cannot compare with the cached stock weights {stock} ({type(err).__name__}: {detail})"
        logger.warning("not measured: %s", why)
        return {"stock": clip_repo, "measured": False, "why": why}
    return {"stock": clip_repo, "measured": True, "tensors": tensors, "max_abs_diff": largest}


def measure_backbone(preset: Preset) -> None:
    """Measure a fetched STAN's tower against the stock one (`backbone_vs_stock`) if its conversion
    could not because the stock weights were not cached then and they are now: the v1 preset's LLaVA
    step fetches them after the STAN is converted, and every preset shares the one STAN folder."""
    out = preset_stan_dir(preset)
    if preset.bundled or _stock_now_cached(out) is None:
        return
    with install_lock(out):  # not while another process replaces the folder
        if (stock := _stock_now_cached(out)) is not None and stan_is_converted(out):
            _write_origin(out, {**read_origin(out), "backbone_vs_stock": backbone_vs_stock(out, stock)})


def _stock_now_cached(out: Path) -> str | None:
    """The stock CLIP repo a conversion's origin.json could not measure against for want of its
    weights, when they are in the hub cache now (else None)."""
    from huggingface_hub import try_to_load_from_cache

    record = read_origin(out).get("backbone_vs_stock") or {}
    if record.get("why") != STOCK_NOT_CACHED:
        return None
    return record["stock"] if isinstance(try_to_load_from_cache(record["stock"], "model.safetensors"), str) else None


def ensure_llava(preset: Preset) -> Fetched:
    """The preset's LLaVA on disk: a hub snapshot of a transformers LLaVA, or the conversion of an
    original-layout LLaVA v1 (`llava_source`) into $STANCHAT_HOME, made once."""
    if preset.bundled:
        path = Path(preset_llava(preset))
        return Fetched("LLaVA (bundled)", path, disk_size(path), new=False)
    if not preset.llava_source:
        fix = f"run `hf download {preset.llava}` on a machine with network, or pass --llava DIR"
        snapshot = hub_snapshot(preset.llava, fix)
        return Fetched(f"LLaVA {preset.llava}", snapshot.path, snapshot.bytes, new=snapshot.new)
    out = Path(preset_llava(preset))
    if not (out / "config.json").is_file():
        with install_lock(out):
            recover(out)
            if not (out / "config.json").is_file():  # else another process converted it while this one waited
                return _convert_llava(preset, out)
    return Fetched(f"LLaVA {out.name}", out, disk_size(out), new=False)


def _convert_llava(preset: Preset, out: Path) -> Fetched:
    """Fetch the original-layout LLaVA v1 and its tower, and convert it into `out` (under the lock)."""
    by_hand = f"`stanchat convert llava DIR --out {out}` on the files `hf download {preset.llava_source}` fetches"
    source = hub_snapshot(preset.llava_source, f"run `hf download {preset.llava_source}` on a machine with network, "
                                               f"then {by_hand}")
    from stanchat.convert.llava_v1 import convert_llava_v1, original_tower  # torch: only when converting

    tower = original_tower(source.path)
    tower_dir = hub_snapshot(tower, f"run `hf download {tower} {' '.join(TOWER_FILES)}` on a machine with network",
                             TOWER_FILES)
    partial = new_partial(out)
    logger.warning("converting %s (original LLaVA layout) into %s", preset.llava_source, out)
    try:
        convert_llava_v1(source.path, partial, clip=tower_dir.path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    install(partial, out)
    return Fetched(f"LLaVA ({preset.llava_source} converted, tower {tower})", out, disk_size(out), new=True,
                   downloads=(source, tower_dir))


def fill(spec: ModelSpec, every: bool = False) -> list[Fetched]:
    """Fetch and convert the parts `spec` lists as missing (`every`: each part its preset supplies, those
    already here reported as such, as `stanchat pull` lists them), STAN first. A bundled part cannot be
    fetched: one missing is the line `ModelSpec.require` raises."""
    todo = spec.parts if every else spec.missing
    if not todo:
        return []
    preset = spec.source
    if preset.bundled:
        spec.require()
    done = [ensure_stan(preset, spec.revision) if part == "stan" else ensure_llava(preset) for part in todo]
    if "stan" in spec.parts and not preset.bundled:
        measure_backbone(preset)  # the LLaVA step may have fetched the stock tower it needs
    return done


def ensure(model: ModelSpec | str | None = None, llava: str | None = None, stan: str | os.PathLike | None = None,
           revision: str | None = None) -> ModelSpec:
    """The spec (`model`, or `resolve(model, llava, stan, revision)`) with its missing parts fetched and
    converted: nothing happens when none is missing (nor when `llava` and `stan` replace both parts). A
    transformers-native LLaVA not yet cached is downloaded here too, so its progress bars show (the CLI
    hides transformers' loading bars afterwards); a cached one is left to `from_pretrained`."""
    spec = to_spec(model, llava, stan, revision)
    fill(spec)
    return replace(spec, missing=())


def pull(model: ModelSpec | str, revision: str | None = None) -> list[Fetched]:
    """Every part preset `model` (a name, or its resolved spec) supplies, fetched and converted now (for a
    machine that will be offline), each reported whether fetched now or already here."""
    return fill(to_spec(model, revision=revision), every=True)
