"""Torch datasets around the annotation readers of `stanchat.datasets` and the decoder of
`stanchat.video`.

Determinism (what `--resume` relies on): the sampler yields `(index, seed)` pairs. The order of an
epoch is a permutation seeded by (run seed, epoch), and every clip's frame sampling and crop are
seeded by (run seed, epoch, index). Nothing depends on worker processes or on the global RNG, so a
run resumed at batch k of an epoch sees exactly the clips, frames and crops it would have seen.

Bad videos: a file that is missing when training starts is skipped and counted once, up front.
A file that fails to decode mid-epoch is replaced by the next record (up to `DECODE_ATTEMPTS`
tries) and counted; batches keep their size, which the cross-process gather of the contrastive
loss needs. Validation never substitutes: a clip that fails is dropped from the metric.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from stanchat.errors import StanchatError

logger = logging.getLogger(__name__)

DECODE_ATTEMPTS = 8  # records tried in a row before a training sample is given up


def clip_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one clip in one epoch (a fixed mixing of three integers)."""
    return ((seed * 1_000_003 + epoch) * 1_000_033 + index) % (2**63)


class ResumableSampler(Sampler):
    """This process's share of an epoch as `(index, seed)` pairs, whole batches only.

    Every process gets `size // world` indices of the epoch's permutation (strided by rank), cut to
    a multiple of `batch_size`. `set_position(epoch, batch)` makes the next iteration start at
    micro-batch `batch` of `epoch`.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world, self.shuffle = rank, world, shuffle
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return (self.size // self.world) // self.batch_size

    def set_position(self, epoch: int, batch: int) -> None:
        self.epoch, self.start = epoch, batch

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        mine = order[self.rank::self.world][: self.batches_per_epoch * self.batch_size].tolist()
        for index in mine[self.start * self.batch_size:]:
            yield index, clip_seed(self.seed, self.epoch, index)


class ClipDataset(Dataset):
    """Records -> {"pixel_values" (T, 3, H, W) float, "text", "label", "video", "skipped"}, and with
    `stills` "still": the record's motion still (3, H, W), None for a record without one.

    `decode(record, seed)` returns the preprocessed clip or raises `StanchatError` (e.g.
    `VideoError`); `decode.still(record, seed)` its motion still. Items are `(index, seed)` pairs
    from a sampler.
    """

    def __init__(self, records: Sequence, decode, labels: dict[str, int] | None = None, attempts: int = DECODE_ATTEMPTS,
                 stills: bool = False):
        self.records, self.decode, self.labels, self.attempts = records, decode, labels, attempts
        self.stills = stills

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        index, seed = item
        for attempt in range(self.attempts):
            record = self.records[(index + attempt) % len(self.records)]
            try:
                pixels = self.decode(record, seed)
                still = self.decode.still(record, seed) if self.stills and record.still is not None else None
            except StanchatError as err:
                logger.warning("skipping %s: %s", record.video, err)
                continue
            label = self.labels[record.label] if self.labels is not None else None
            return {"pixel_values": pixels, "text": record.text, "label": label,
                    "video": record.video_id, "skipped": attempt, "still": still}
        return {"pixel_values": None, "skipped": self.attempts}


class Collator:
    """Stack clips, tokenise captions to exactly `max_tokens` (one shape on every process) and
    sum the skip counts. Samples whose every attempt failed are dropped. When some sample has a
    motion still: "stills" (B, 3, H, W), zeros where a clip has none, and "has_still" (B,) bool."""

    def __init__(self, tokenizer, max_tokens: int, with_text: bool, with_labels: bool):
        self.tokenizer, self.max_tokens = tokenizer, max_tokens
        self.with_text, self.with_labels = with_text, with_labels

    def __call__(self, samples: list[dict]) -> dict:
        kept = [s for s in samples if s["pixel_values"] is not None]
        batch = {"skipped": sum(s["skipped"] for s in samples), "size": len(kept)}
        if not kept:
            return batch
        batch["pixel_values"] = torch.stack([s["pixel_values"] for s in kept])  # (B, T, 3, H, W)
        batch["videos"] = [s["video"] for s in kept]
        if any(s.get("still") is not None for s in kept):
            blank = torch.zeros_like(kept[0]["pixel_values"][0])  # (3, H, W)
            batch["stills"] = torch.stack([blank if s["still"] is None else s["still"] for s in kept])
            batch["has_still"] = torch.tensor([s["still"] is not None for s in kept])
        if self.with_text:
            batch.update(self.tokenizer([s["text"] for s in kept], padding="max_length", truncation=True,
                                        max_length=self.max_tokens, return_tensors="pt"))
        if self.with_labels:
            batch["labels"] = torch.tensor([s["label"] for s in kept])
        if "stream" in kept[-1]:  # shards: every sample of a batch comes from one reader; where it is now
            batch["stream"] = kept[-1]["stream"]
        return batch


@dataclass
class Loaders:
    """What the loop iterates: the training loader with its sampler (loose files) or its stream
    (shards, `training.stream`), and an optional validation loader."""

    train: DataLoader
    sampler: ResumableSampler | None  # loose files
    val: DataLoader | None
    train_size: int | None  # present training records; shards: samples per their stats files, None if unknown
    missing: int  # training records whose video file was missing at start
    stream: object | None = None  # shards: the training.stream.ShardStream the loader reads
    stream_state: object | None = None  # shards: this process's training.stream.StreamState


def make_loader(dataset: Dataset, batch_size: int, collate: Collator, workers: int, sampler: Sampler | None = None,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader with its own generator, so creating an iterator never draws from the global
    RNG (which drop-path uses; a resumed run must see the same draws). A sampled dataset keeps its
    workers across epochs; a stream starts them afresh, since they take the epoch's start with them."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=workers,
                      drop_last=drop_last, persistent_workers=workers > 0 and sampler is not None,
                      generator=torch.Generator().manual_seed(0), pin_memory=torch.cuda.is_available())


def tokenize_classes(tokenizer, classes: Sequence[str], prompt: str, max_tokens: int) -> dict[str, torch.Tensor]:
    """Prompts of every class name, tokenised: `input_ids`, `attention_mask` (C, max_tokens)."""
    if "{}" not in prompt:
        raise StanchatError(f"data.prompt {prompt!r} needs a {{}} where the class name goes")
    texts = [prompt.format(name) for name in classes]
    return dict(tokenizer(texts, padding="max_length", truncation=True, max_length=max_tokens, return_tensors="pt"))


@dataclass
class Inputs:
    """The checked annotations of a run (no video opened yet)."""

    train: list  # training records whose video file exists
    missing: int  # training records whose video file does not
    val: list  # validation records whose video exists; empty = no validation
    classes: list[str] | None  # recognition: class names in label order


def read_inputs(config) -> Inputs:
    """Read and check the training (and validation) annotations and class names of `config`.
    Every problem is a one-line StanchatError: unknown dataset, missing file, wrong column, no videos."""
    from stanchat.datasets import class_names, read_dataset, split_present

    data = config.data
    if not data.root:
        raise StanchatError("data.root is not set; point it at the dataset's folder, e.g. data.root=/data/msrvtt")
    kind = "recognition" if config.task == "recognition" else "retrieval"
    records = read_dataset(data.dataset, data.root, data.annotations or None, data.split, task=kind)
    train, missing = split_present(records)
    if missing:
        logger.warning("%d of %d training videos are missing and skipped (first: %s)", len(missing), len(records), missing[0].video)
    if config.model.motion_still_weight > 0 and not any(r.still is not None for r in train):
        raise StanchatError("model.motion_still_weight is set but no training record names a `still` image; add one to "
                            "the annotations (jsonl/csv field `still`) or set model.motion_still_weight=0")
    val = []
    if data.val_split:
        records = read_dataset(data.dataset, data.root, data.val_annotations or None, data.val_split, task=kind)
        val, val_missing = split_present(records)
        if val_missing:
            logger.warning("%d of %d validation videos are missing and left out", len(val_missing), len(records))
    classes = None
    if kind == "recognition":
        classes = (read_class_file(data.class_names) if data.class_names
                   else class_names(data.dataset, data.root, data.annotations or None, data.split))
        unknown = sorted({r.label for r in train + val} - set(classes))
        if unknown:
            raise StanchatError(f"{len(unknown)} labels are not in the class list, e.g. {unknown[0]!r}; check data.class_names")
    return Inputs(train=train, missing=len(missing), val=val, classes=classes)


def read_class_file(path: str) -> list[str]:
    """One class name per non-empty line, cleaned like the readers clean labels."""
    from pathlib import Path

    from stanchat.datasets import clean_class_name

    file = Path(path)
    if not file.is_file():
        raise StanchatError(f"class name file {file} does not exist; check data.class_names")
    names = [clean_class_name(line) for line in file.read_text().splitlines() if line.strip()]
    if not names:
        raise StanchatError(f"class name file {file} is empty")
    return names


def build_loaders(config, inputs: Inputs, tokenizer, image_size: int, rank: int, world: int) -> Loaders:
    """Training loader (resumable sampler, substitution on decode errors) and validation loader."""
    from training.decode import ClipDecoder

    data = config.data
    labels = class_index(inputs.classes)
    collate = Collator(tokenizer, data.max_tokens, with_text=labels is None, with_labels=labels is not None)
    train_set = ClipDataset(inputs.train, ClipDecoder(data.frames, image_size, train=True), labels,
                            stills=config.model.motion_still_weight > 0)
    sampler = ResumableSampler(len(train_set), data.batch_size, config.run.seed, rank, world, data.shuffle)
    train = make_loader(train_set, data.batch_size, collate, data.num_workers, sampler)
    val = None
    if inputs.val:
        val_set = ClipDataset(inputs.val, ClipDecoder(data.frames, image_size, train=False), labels, attempts=1)
        val_sampler = [(i, 0) for i in range(len(val_set))]
        val = make_loader(val_set, data.val_batch_size, collate, data.num_workers, val_sampler)
    return Loaders(train=train, sampler=sampler, val=val, train_size=len(inputs.train), missing=inputs.missing)


def class_index(classes: list[str] | None) -> dict[str, int] | None:
    """Class name -> label index (recognition), None for text tasks."""
    return {name: i for i, name in enumerate(classes)} if classes is not None else None
