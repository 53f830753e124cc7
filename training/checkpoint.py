"""Checkpoints that survive being killed at any moment.

A checkpoint is a directory `<output_dir>/checkpoints/step-00001000/` holding
  config.json + model.safetensors   the model, loadable with `VideoCLIP.from_pretrained`
  tokenizer files                    so the directory is a complete model
  train_config.yaml                  the resolved training config
  trainer_state.pt                   optimizer, scheduler and loop position (tensors and plain
                                     Python values only: loads with `torch.load(weights_only=True)`)
  rng-<rank>.pt                      python / numpy / torch RNG states of each process
  stream-<rank>.json                 shards only: each process's place in the stream (training.stream)

It is written into `.tmp-step-...` and renamed into place when complete, so a `step-*`
directory is always whole: a run killed mid-write leaves only a `.tmp-*` directory, which the next
run deletes. Old checkpoints are renamed to `.trash-*` before being deleted, for the same reason.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from stanchat.errors import StanchatError
from stanchat.videoclip import ARCHITECTURE, CONFIG_NAME, WEIGHTS_NAME

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
TRAIN_CONFIG = "train_config.yaml"
TRAINER_STATE = "trainer_state.pt"
REQUIRED = (CONFIG_NAME, WEIGHTS_NAME, TRAIN_CONFIG, TRAINER_STATE)
_NAME = re.compile(r"^step-(\d{8})$")


@dataclass
class TrainerState:
    """Where the loop is; saved in every checkpoint so that `--resume` continues exactly."""

    step: int = 0  # optimizer steps completed
    epoch: int = 0  # epoch of the next micro-batch
    batch: int = 0  # micro-batches of `epoch` already consumed by each process
    clips: int = 0  # clips trained on, summed over processes
    skipped: int = 0  # videos that failed to decode and were replaced by the next one


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step:08d}"


def temp_dir(final: Path) -> Path:
    return final.parent / f".tmp-{final.name}"


def begin(final: Path) -> Path:
    """Create an empty temporary directory for the checkpoint `final` (main process only)."""
    tmp = temp_dir(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_rng(directory: Path, rank: int) -> None:
    """This process's RNG states (each process has its own, e.g. for drop-path)."""
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    _save_torch(state, directory / f"rng-{rank}.pt")


def write_stream(directory: Path, rank: int, state: dict) -> None:
    """This process's place in the shard stream (`training.stream.StreamState.to_dict()`)."""
    _write_text(directory / f"stream-{rank}.json", json.dumps(state, indent=1) + "\n")


def read_stream(directory: Path, rank: int) -> dict:
    """What `write_stream` wrote for `rank`; one line naming the cause when it is not there."""
    path = directory / f"stream-{rank}.json"
    if not path.is_file():
        raise StanchatError(f"cannot resume the shard stream from {directory}: it has no {path.name} (it was saved by "
                            "a run on loose files, or by fewer processes); resume with the data it was trained on")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StanchatError(f"{path} does not load ({err.msg}); resume from an earlier checkpoint") from None


def write_main(directory: Path, model_state: dict[str, torch.Tensor], model_config: dict, tokenizer,
               train_config_yaml: str, trainer: TrainerState, optimizer: dict, scheduler: dict) -> None:
    """Everything but the RNG files (main process only). `model_state` is the full VideoCLIP state
    dict and `model_config` its `VideoCLIPConfig.to_dict()`."""
    weights = {k: v.detach().contiguous().cpu() for k, v in model_state.items()}
    save_file(weights, directory / WEIGHTS_NAME, metadata={"format": "pt", "architecture": ARCHITECTURE})
    _write_text(directory / CONFIG_NAME, json.dumps(model_config, indent=2) + "\n")
    tokenizer.save_pretrained(directory)
    _write_text(directory / TRAIN_CONFIG, train_config_yaml)
    _save_torch({"trainer": asdict(trainer), "optimizer": optimizer, "scheduler": scheduler}, directory / TRAINER_STATE)


def commit(tmp: Path, final: Path) -> None:
    """Make the checkpoint visible: flush every file, then one atomic rename."""
    for path in tmp.iterdir():
        _fsync(path)
    _fsync(tmp)
    if final.exists():  # the same step saved twice (e.g. a stop step that is also a save step)
        _discard(final)
    os.rename(tmp, final)
    _fsync(final.parent)


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under `output_dir`, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def prune(output_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints and any leftovers of killed writes.
    Main process only, between checkpoint writes (no `.tmp-*` of this run exists then)."""
    root = Path(output_dir) / CHECKPOINTS
    for old in list_checkpoints(output_dir)[:-keep_last]:
        _discard(old)
    for leftover in [*root.glob(".trash-*"), *root.glob(".tmp-*")]:  # runs killed mid-write or mid-delete
        shutil.rmtree(leftover, ignore_errors=True)


def resolve_resume(resume: str, output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint directory named by `run.resume` ("" -> None, "latest" -> newest or None)."""
    if not resume:
        return None
    if resume == "latest":
        return newest_intact(output_dir)
    path = Path(resume)
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise StanchatError(f"cannot resume from {path}: it lacks {', '.join(missing)}; pass a step-* checkpoint directory")
    problem = damage(path)
    if problem:
        raise StanchatError(f"cannot resume from {path}: {problem}; pass another step-* checkpoint directory or --resume alone")
    return path


def newest_intact(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint whose trainer state reads back (None when there is no checkpoint at all).
    A damaged one (e.g. a disk filled while it was written, or a file cut short by a copy) is passed
    over with one warning line; when every checkpoint is damaged that is an error."""
    found = list_checkpoints(output_dir)
    damaged = []
    for path in reversed(found):
        problem = damage(path)
        if not problem:
            if damaged:
                logger.warning("checkpoint %s is damaged (%s); resuming from %s, the newest intact one",
                               damaged[0][0], damaged[0][1], path.name)
            return path
        damaged.append((path, problem))
    if found:
        raise StanchatError(f"no intact checkpoint under {Path(output_dir) / CHECKPOINTS}; start afresh in a new "
                            "run.output_dir or with run.overwrite=true")
    return None


def damage(directory: Path) -> str:
    """Why the checkpoint `directory` cannot be resumed from ("" when it can): a missing file or a
    trainer state that does not load."""
    missing = [name for name in REQUIRED if not (directory / name).is_file()]
    if missing:
        return f"it lacks {', '.join(missing)}"
    try:
        read_state(directory)
    except Exception as err:  # noqa: BLE001 - torch.load raises many kinds for a cut-short file
        return f"{TRAINER_STATE} does not load: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return ""


def read_state(directory: Path) -> dict:
    """`trainer_state.pt` as a dict with `trainer` (a TrainerState), `optimizer` and `scheduler`."""
    state = torch.load(directory / TRAINER_STATE, map_location="cpu", weights_only=True)
    state["trainer"] = TrainerState(**state["trainer"])
    return state


def restore_rng(directory: Path, rank: int) -> bool:
    """Restore this process's RNG states; False when the checkpoint has none for this rank."""
    path = directory / f"rng-{rank}.pt"
    if not path.is_file():
        return False
    state = torch.load(path, map_location="cpu", weights_only=True)
    random.setstate(_to_tuple(state["python"]))
    np.random.set_state(_numpy_from(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    return True


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_from(state: dict) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return state["name"], keys, state["pos"], state["has_gauss"], state["cached"]


def _to_tuple(value: object) -> object:
    """random.setstate wants nested tuples; a round trip may give lists."""
    return tuple(_to_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _save_torch(obj: object, path: Path) -> None:
    torch.save(obj, path)
    _fsync(path)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)
    _fsync(path)


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk so that a rename after it cannot expose empty files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(path: Path) -> None:
    """Remove a checkpoint atomically from view (rename), then delete it."""
    trash = path.parent / f".trash-{path.name}"
    if trash.exists():
        shutil.rmtree(trash)
    os.rename(path, trash)
    shutil.rmtree(trash)
