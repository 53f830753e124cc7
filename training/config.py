"""Training configuration: dataclasses with one commented default per value, read from YAML and
overridden from the command line as `section.key=value` (e.g. `optim.stan_lr=1e-4`,
`model.stan.end_layer=-2`).

A YAML file may name another one as `base: other.yaml` (a path relative to the file); its values
are read first and the file's own values override them. Unknown keys fail with one line listing
the valid ones, before anything is built.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stanchat.errors import StanchatError
from stanchat.options import SCORING_MODES
from stanchat.stan import STANConfig

TASKS = ("pretrain", "retrieval", "recognition")
PRECISIONS = ("no", "bf16", "fp16")
STRATEGIES = ("ddp", "fsdp")


@dataclass
class ModelConfig:
    clip: str = "openai/clip-vit-base-patch32"  # HF CLIP hub id or directory (weights + tokenizer); "tiny" builds a random tiny CLIP in output_dir
    pretrained: str = ""  # a VideoCLIP directory (e.g. a pretraining checkpoint) to start from; "" = a fresh STAN on `clip`
    stan: STANConfig = field(default_factory=STANConfig)  # the STAN branch; used only for a fresh model
    freeze_clip: bool = False  # train the STAN branch only (graft-ready); the CLIP lr is then unused
    freeze_text: bool = False  # keep the text tower fixed (recognition always does: class embeddings are computed once)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more compute
    scoring: str = "mean"  # video-text score in the loss and in validation: mean | mug | mug-simple
    still_weight: float = 0.0  # graft-ready STAN: weight of the still-video loss (`training.losses.still_gap`) added to the contrastive one; 0 = off
    motion_still_weight: float = 0.0  # graft-ready STAN: weight of the motion-still loss (`training.losses.motion_still_gap`): a clip's graft tokens pulled towards the tower's tokens of its record's `still` image (a picture of the same motion, e.g. a synthetic trail still); 0 = off
    reversed_negatives: bool = False  # every caption also ranks its batch's clips played backwards as negatives (time-reversal hard negatives; the STAN and the CLIP layers after it run twice); only for data whose events do not read the same backwards


@dataclass
class DataConfig:
    dataset: str = "jsonl"  # annotation format, a name in stanchat.datasets.FORMATS (webvid, msrvtt, didemo, lsmdc, k400, ucf101, hmdb51, jsonl, csv, ...), or webdataset: stream tar shards (training/stream.py)
    root: str = ""  # data root holding the dataset in its usual layout (annotation files and video folder); webdataset: a folder of shards (<split>/*.tar), a brace pattern or a .txt list of shards (pipe: commands allowed)
    split: str = "train"  # training split: its default annotation file under `root` is read
    annotations: str = ""  # training annotation file instead of the split's default
    val_split: str = ""  # held-out split validated every run.val_every steps, e.g. "test" (MSR-VTT 1k-A); "" = none
    val_annotations: str = ""  # validation annotation file instead of val_split's default
    class_names: str = ""  # recognition: text file with one class name per line, in label order; "" = the dataset's list
    prompt: str = "a video of {}."  # recognition: template a class name is put into before the text tower
    frames: int = 12  # frames per clip: one random frame in each of T segments for training, segment centres for validation
    image_size: int = 0  # square crop size in pixels; 0 = the CLIP tower's native size
    max_tokens: int = 32  # text tokens per caption, BOS and EOS included (the paper: 32 or 64)
    batch_size: int = 32  # clips per process per micro-batch
    val_batch_size: int = 32  # clips per forward pass in validation
    num_workers: int = 4  # DataLoader worker processes per training process; 0 decodes in the main process
    shuffle: bool = True  # training order: loose files in a new permutation each epoch; shards in a new order each epoch and their samples within windows of shuffle_buffer
    shuffle_buffer: int = 1000  # webdataset: samples a reader holds (encoded) and emits in a random order; memory per reader is this many encoded videos
    caption_field: str = ""  # webdataset: the .json field holding the caption; "" = the .txt member (video2dataset's caption)
    label_field: str = "label"  # webdataset, recognition: the .json field holding the class name (classes from data.class_names)


@dataclass
class OptimConfig:
    clip_lr: float = 4e-6  # peak lr of CLIP weights (paper: 4e-6 pretrain, 2e-6 retrieval, 8e-6 recognition)
    stan_lr: float = 4e-5  # peak lr of the STAN branch (paper: 10x the CLIP lr)
    weight_decay: float = 0.2  # AdamW decoupled decay; never applied to norms, biases and embeddings
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas (CLIP's)
    eps: float = 1e-6  # AdamW epsilon (CLIP's)
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    accumulation_steps: int = 1  # micro-batches per optimizer step (contrastive negatives stay per micro-batch)


@dataclass
class ScheduleConfig:
    epochs: int = 5  # passes over the training set, used when `steps` is 0
    steps: int = 0  # optimizer steps in total; 0 = epochs x steps per epoch
    warmup: float = 0.1  # fraction of the steps with linear warmup from 0, then cosine decay
    min_lr_ratio: float = 0.0  # the cosine ends at this fraction of the peak lr


@dataclass
class RunConfig:
    output_dir: str = "runs/default"  # checkpoints, metrics.jsonl and the resolved config go here
    seed: int = 42  # seeds model init, data order, augmentation and drop-path
    mixed_precision: str = "no"  # no | bf16 | fp16 autocast (accelerate)
    strategy: str = "ddp"  # ddp | fsdp when launched on several processes (accelerate launch / torchrun)
    cpu: bool = False  # force CPU even when a GPU is visible
    log_every: int = 10  # optimizer steps between metrics.jsonl lines
    save_every: int = 1000  # optimizer steps between checkpoints (the last step is always saved)
    keep_last: int = 3  # checkpoints kept on disk; older ones are deleted
    val_every: int = 1000  # optimizer steps between validations (and after the last step); 0 = never
    resume: str = ""  # "" = start fresh; "latest" = newest intact checkpoint in output_dir; or a checkpoint directory
    overwrite: bool = False  # start fresh in an output_dir that already holds a run (its metrics and checkpoints are deleted); without it such a start is refused
    stop_at_step: int = 0  # stop after this step (checkpointed) without changing the schedule; 0 = run to the end
    log_samples: bool = False  # write samples-<rank>.jsonl: per step, the keys of the clips each process trained on (to audit what a run saw)
    progress: bool = True  # show a progress bar on the main process


@dataclass
class TrainConfig:
    task: str = "retrieval"  # pretrain | retrieval | recognition
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Raise StanchatError naming the allowed values for the first field that has none of them."""
        for name, value, allowed in (
            ("task", self.task, TASKS),
            ("model.scoring", self.model.scoring, SCORING_MODES),
            ("run.mixed_precision", self.run.mixed_precision, PRECISIONS),
            ("run.strategy", self.run.strategy, STRATEGIES),
        ):
            if value not in allowed:
                raise StanchatError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        for name, value in (("data.frames", self.data.frames), ("data.batch_size", self.data.batch_size),
                            ("data.max_tokens", self.data.max_tokens), ("data.val_batch_size", self.data.val_batch_size),
                            ("optim.accumulation_steps", self.optim.accumulation_steps),
                            ("run.save_every", self.run.save_every), ("run.log_every", self.run.log_every),
                            ("run.keep_last", self.run.keep_last), ("data.shuffle_buffer", self.data.shuffle_buffer)):
            if value < 1:
                raise StanchatError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= self.schedule.warmup < 1.0:
            raise StanchatError(f"schedule.warmup is a fraction of the steps in [0, 1), got {self.schedule.warmup}")


def load_config(path: str | None = None, overrides: typing.Sequence[str] = ()) -> TrainConfig:
    """Defaults, then the YAML file at `path` (and its `base:` chain), then `key=value` overrides."""
    values = read_yaml(Path(path)) if path else {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise StanchatError(f"override {item!r} is not of the form section.key=value (e.g. optim.stan_lr=1e-4)")
        set_dotted(values, key.strip(), _parse_scalar(raw))
    config = build(TrainConfig, values, prefix="")
    config.validate()
    return config


def read_yaml(path: Path) -> dict:
    """A YAML mapping with its `base:` file (relative to it) merged underneath."""
    import yaml

    if not path.is_file():
        raise StanchatError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise StanchatError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(values, dict):
        raise StanchatError(f"config file {path} must hold a mapping of sections, got {type(values).__name__}")
    base = values.pop("base", None)
    if base is None:
        return values
    return merge(read_yaml(path.parent / base), values)


def merge(base: dict, top: dict) -> dict:
    """Nested dict merge: `top` wins, sections are merged key by key."""
    out = dict(base)
    for key, value in top.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def set_dotted(values: dict, key: str, value: object) -> None:
    """values["a"]["b"] = value for key "a.b", creating sections as needed."""
    *sections, last = key.split(".")
    for section in sections:
        values = values.setdefault(section, {})
        if not isinstance(values, dict):
            raise StanchatError(f"override {key}: {section} is a value, not a section")
    values[last] = value


def _parse_scalar(raw: str) -> object:
    """YAML's reading of a command-line value ("true" -> True, "[1, 2]" -> list, "x" -> "x", "" -> "")."""
    import yaml

    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def build(cls: type, values: dict, prefix: str) -> object:
    """Instantiate dataclass `cls` from a nested dict, converting each value to its field's type."""
    if not isinstance(values, dict):
        raise StanchatError(f"{prefix.rstrip('.') or 'config'} must be a section (a mapping), got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = f"section {prefix.rstrip('.')!r}" if prefix else "the top level"
        raise StanchatError(f"unknown config key {prefix}{unknown[0]}; valid keys in {where}: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = build(kind, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, kind, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except ValueError as err:  # a dataclass's own validation (e.g. STANConfig.depth)
        raise StanchatError(f"{prefix.rstrip('.') or 'config'}: {err}") from err


def _coerce(value: object, kind: object, key: str) -> object:
    """Convert a YAML value to `kind` (bool, int, float, str or a tuple of floats), or fail naming the key."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float and not isinstance(value, bool):
        try:  # YAML 1.1 reads "4e-6" as a string
            return float(value)
        except (TypeError, ValueError):
            pass
    elif kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
        inner = typing.get_args(kind)
        if len(value) == len(inner):
            return tuple(_coerce(v, t, key) for v, t in zip(value, inner))
    raise StanchatError(f"config key {key} expects {_type_name(kind)}, got {value!r}")


def _type_name(kind: object) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def dump_config(config: TrainConfig) -> str:
    """The resolved config as YAML (loads back with `load_config`)."""
    import yaml

    data = config.to_dict()
    data["optim"]["betas"] = list(data["optim"]["betas"])
    return yaml.safe_dump(data, sort_keys=False)
