"""Training on WebDataset tar shards (`data.dataset=webdataset`), streamed, with an exact resume.

Readers. With P processes and W DataLoader workers each (W = 1 when data.num_workers is 0) there
are P x W readers; reader `rank * W + worker` reads the shards `shards_for` deals it for the epoch
(a new shard order each epoch): readers get disjoint shards that together are all of them.

Windowed shuffle. A reader takes its stream in windows of `data.shuffle_buffer` (B) consecutive
samples and emits each window in a random order seeded by (seed, epoch, reader, window). The next
window is read while the current one is emitted, one sample read per sample emitted, so a reader
holds B encoded samples at any time and only the very first window makes it wait. Only an emitted
sample is decoded (from its bytes, through the same watchdog-protected decode as a file).

Position. After each slot it emits, a reader is at (window, shard, offset, taken): the window's
number, where the window starts (index into the reader's shard list, sample offset in that shard)
and how many of its slots are done. A reader's output is a function of (seed, epoch, reader, its
shards), so starting from a position re-reads that window (B samples, undecoded) and goes on exactly
as before. Getting there reads the window's first shard from its start (a tar stream has no index;
the skipped samples are read, not decoded; a `pipe:` shard is streamed again). A position holds only
under the layout it was saved with (processes, workers, seed, shuffle, window, shards): another is
refused in one line. The main process keeps, per worker, the position after the last batch it
consumed (prefetched batches do not count) and which worker's batch comes next (DataLoader takes
workers in turn); checkpoints store that per process (`stream-<rank>.json`). A resumed loader starts
each worker at its position and renumbers the workers so that the turn starts where it stopped:
the resumed run trains on the same batches, in the same order, as a run that was never stopped.

What an epoch is, and what it leaves out. An epoch is one pass over the shards: every sample is
emitted at most once, and a resume neither repeats nor skips one. Not trained on in an epoch:
- each reader's last partial batch (fewer than data.batch_size samples): batches keep their size,
  which the cross-process gather of the contrastive loss needs;
- with several processes, the batches a process still has when another one runs out: the epoch
  ends for all of them together (one collective check per micro-batch keeps them in step). Shards
  are dealt round robin, so that is at most about one shard per reader;
- samples that cannot be used (no video or text, undecodable, the rest of a damaged shard, a label
  outside data.class_names): skipped, warned once per cause in each loader worker (workers start
  afresh each epoch), and counted in `skipped` (those after a reader's last sample of an epoch are
  warned about but not counted).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import random
import re
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

from torch.utils.data import IterableDataset, get_worker_info

from stanchat.datasets.shards import ShardSample, list_shards, shard_samples, shard_sizes, shards_for
from stanchat.errors import StanchatError
from training.data import Collator, Loaders, class_index, clip_seed, make_loader, read_class_file
from training.decode import ClipDecoder

STREAM = "webdataset"  # the data.dataset that streams shards

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Position:
    """Where a reader is in its epoch (see the module docstring)."""

    window: int = 0  # windows of this epoch begun before the current one
    shard: int = 0  # the current window starts in this shard (index into the reader's shard list) ...
    offset: int = 0  # ... at this sample offset
    taken: int = 0  # slots of the current window already emitted (used or skipped)


@dataclass
class StreamState:
    """One process's place in the stream: what `stream-<rank>.json` holds."""

    layout: dict  # what the positions are positions in (ShardStream.layout): processes, readers, seed, order, shards
    positions: dict[int, Position] = field(default_factory=dict)  # worker -> position after its last consumed batch
    next_worker: int = 0  # whose batch the DataLoader hands over next

    def consumed(self, worker: int, position: Position) -> None:
        """Record a batch the loop took from `worker`, ending at `position`."""
        self.positions[worker] = position
        self.next_worker = (worker + 1) % self.layout["workers"]

    def new_epoch(self) -> None:
        self.positions, self.next_worker = {}, 0

    def to_dict(self) -> dict:
        return {"layout": self.layout, "next_worker": self.next_worker,
                "positions": {str(w): asdict(p) for w, p in self.positions.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "StreamState":
        positions = {int(w): Position(**p) for w, p in data["positions"].items()}
        return cls(data["layout"], positions, data["next_worker"])


# what a saved position depends on, named as the user sets it
LAYOUT_NAMES = {"world": "processes", "workers": "data.num_workers readers per process", "seed": "run.seed",
                "shuffle": "data.shuffle", "buffer": "data.shuffle_buffer", "shards": "the shards (their names)"}


@dataclass(frozen=True)
class Reading:
    """How samples are read: which .json fields hold the text, and the class of each label."""

    caption_field: str = ""  # "" = the .txt member
    label_field: str = ""  # recognition: the .json field with the class name; "" = retrieval
    labels: dict[str, int] | None = None  # recognition: class name -> index


class ShardStream(IterableDataset):
    """The samples of `shards` for this process, as dicts the training Collator batches:
    {"pixel_values" (T, 3, H, W), "text", "label", "video" (the key), "skipped", "still": None,
    "stream": (worker, Position after this sample)}.

    `decode(data, suffix, seed)` turns a sample's bytes into pixels (`training.decode.ClipDecoder.
    from_bytes`); it raises StanchatError for a video it cannot read. Call `start(epoch, state)`
    before iterating (DataLoader workers get a copy of this object as it is then)."""

    def __init__(self, shards: list[str], decode: Callable, reading: Reading, *, seed: int, rank: int = 0,
                 world: int = 1, workers: int = 1, shuffle: bool = True, buffer: int = 1000):
        self.shards, self.decode, self.reading = shards, decode, reading
        self.seed, self.rank, self.world, self.workers = seed, rank, world, workers
        self.shuffle, self.buffer = shuffle, buffer
        self.epoch, self.state = 0, self.fresh_state()

    @property
    def layout(self) -> dict:
        """Everything a reader's position depends on besides the epoch: a position saved under
        another layout would point at other samples."""
        names = hashlib.sha256("\n".join(Path(s).name for s in self.shards).encode()).hexdigest()[:16]
        return {"world": self.world, "workers": self.workers, "seed": self.seed, "shuffle": self.shuffle,
                "buffer": self.buffer, "shards": f"{len(self.shards)} shards, names {names}"}

    def fresh_state(self) -> StreamState:
        """The state of an epoch's start (no reader has begun)."""
        return StreamState(self.layout)

    def start(self, epoch: int, state: StreamState) -> None:
        changed = [key for key in LAYOUT_NAMES if state.layout.get(key) != self.layout[key]]
        if changed:
            key = changed[0]
            raise StanchatError(
                f"the stream position was saved with {LAYOUT_NAMES[key]} = {state.layout.get(key)}, not "
                f"{self.layout[key]}; resume with the run's processes, data.num_workers, run.seed, data.shuffle, "
                "data.shuffle_buffer and shards"
            )
        self.epoch, self.state = epoch, copy.deepcopy(state)  # the loop goes on updating its own

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        # DataLoader asks worker 0 first: renumber so that the worker that was next comes first
        worker = 0 if info is None else (info.id + self.state.next_worker) % info.num_workers
        reader, readers = self.rank * self.workers + worker, self.world * self.workers
        shards = shards_for(self.shards, self.seed, self.epoch, self.rank, self.world, worker, self.workers, self.shuffle)
        start = self.state.positions.get(worker, Position())
        skipped = 0
        for slot, (_, _, got), after in windows(self._items(shards, start), start, self.buffer, self._order(reader)):
            seed = clip_seed(self.seed, self.epoch, slot * readers + reader)
            sample = self._use(got, seed)
            if sample is None:
                skipped += 1
                continue
            yield {**sample, "skipped": skipped, "still": None, "stream": (worker, after)}
            skipped = 0

    def _items(self, shards: list[str], start: Position) -> Iterator[tuple[int, int, ShardSample | StanchatError]]:
        """(shard index, offset, sample or error) of the reader's stream from `start` on."""
        for index in range(start.shard, len(shards)):
            first = start.offset if index == start.shard else 0
            for offset, got in shard_samples(shards[index], first, self.reading.caption_field, self.reading.label_field):
                yield index, offset, got

    def _order(self, reader: int) -> Callable[[int, int], list[int]]:
        """window number, window length -> the order its slots are emitted in."""
        def order(window: int, length: int) -> list[int]:
            slots = list(range(length))
            if self.shuffle:
                random.Random(clip_seed(self.seed, self.epoch, window * 1_000_003 + reader)).shuffle(slots)
            return slots
        return order

    def _use(self, got: ShardSample | StanchatError, seed: int) -> dict | None:
        """The sample's pixels and text, or None (logged) when it cannot be used."""
        if isinstance(got, StanchatError):
            _warn_once(str(got))
            return None
        labels = self.reading.labels
        if labels is not None and got.text not in labels:
            _warn_once(f"sample {got.key} of {got.shard} has label {got.text!r}, which is not in data.class_names")
            return None
        try:
            pixels = self.decode(got.video, f".{got.extension}", seed)
        except StanchatError as err:
            _warn_once(f"skipping sample {got.key} of {got.shard}: {err}")
            return None
        return {"pixel_values": pixels, "text": got.text, "label": labels[got.text] if labels is not None else None,
                "video": got.key}


def windows(items: Iterator[tuple], start: Position, size: int,
            order: Callable[[int, int], list[int]]) -> Iterator[tuple[int, tuple, Position]]:
    """(slot number in the epoch, item, Position after it) for each slot from `start` on.

    `items` yields (shard index, offset, payload) from `start`'s window start. Window k holds the
    `size` items after window k-1's and is emitted in `order(k, len)`; while it is emitted the next
    window is read, one item per slot, so at most `size` items are held. Slots before `start.taken`
    of the first window are passed over (they were emitted before the resume)."""
    current: list = list(islice(items, size))
    number, skip = start.window, start.taken
    while current:
        first, last = current[0][:2], current[-1][:2]  # (shard, offset) where this window starts and ends
        upcoming: list = []
        for j, i in enumerate(order(number, len(current))):
            ahead = next(items, None)
            if ahead is not None:
                upcoming.append(ahead)
            item, current[i] = current[i], None  # (drop it from the window: bounded memory)
            if j + 1 < len(current):
                after = Position(number, *first, j + 1)
            else:  # the window is done: the position is the next window's start, or past the stream's end
                after = Position(number + 1, *(upcoming[0][:2] if upcoming else (last[0] + 1, 0)), 0)
            if j >= skip:
                yield number * size + j, item, after
        current = upcoming + list(islice(items, size - len(upcoming)))
        number, skip = number + 1, 0


@dataclass
class StreamInputs:
    """The checked shards of a run (only the first sample read)."""

    shards: list[str]  # training shards, in listed order
    val: list[str]  # validation shards; empty = no validation
    classes: list[str] | None  # recognition: class names in label order (data.class_names)
    samples: int | None  # training samples per epoch from the shards' stats files; None = unknown until read


def read_stream_inputs(config) -> StreamInputs:
    """List and check the shards of `config` and read their first sample, so that a wrong source,
    a shard that is not a tar or samples without video or text fail in one line before training."""
    data = config.data
    if config.model.motion_still_weight > 0:
        raise StanchatError("model.motion_still_weight needs a still image per clip, which shards do not carry; "
                            "set it to 0, or train from a jsonl annotation with `still` fields")
    shards = list_shards(data.root, data.split)
    classes = None
    if config.task == "recognition":
        if not data.class_names:
            raise StanchatError("recognition on shards needs data.class_names (one class name a line): the classes "
                                "of a stream are not known before it is read")
        classes = read_class_file(data.class_names)
    check_first_sample(shards[0], reading_for(config, classes))
    val = []
    if data.val_split or data.val_annotations:
        if not data.val_annotations and not Path(data.root).is_dir():
            raise StanchatError("name the validation shards with data.val_annotations (a folder, brace pattern or "
                                "list file): data.val_split picks a subfolder only when data.root is a folder")
        val = list_shards(data.val_annotations or data.root, data.val_split or "val")
    sizes = shard_sizes(shards)
    return StreamInputs(shards, val, classes, sum(sizes) if sizes is not None else None)


def reading_for(config, classes: list[str] | None) -> Reading:
    data = config.data
    if classes is None:
        return Reading(caption_field=data.caption_field)
    return Reading(label_field=data.label_field, labels=class_index(classes))


def check_first_sample(shard: str, reading: Reading) -> None:
    """The shard's first sample must have a video and a text (and a known label)."""
    with closing(shard_samples(shard, 0, reading.caption_field, reading.label_field)) as samples:  # (ends a pipe:)
        _, got = next(samples, (0, None))
    if got is None:
        raise StanchatError(f"shard {shard} holds no samples; check the shards")
    if isinstance(got, StanchatError):
        raise got
    if reading.labels is not None and got.text not in reading.labels:
        raise StanchatError(f"sample {got.key} of {shard} has label {got.text!r}, which data.class_names does not "
                            "list; check data.class_names and data.label_field")


def build_stream_loaders(config, inputs: StreamInputs, tokenizer, image_size: int, rank: int, world: int) -> Loaders:
    """Training loader over this process's share of the shards, and a validation loader over all
    of the validation shards (every process validates on all of them)."""
    data = config.data
    reading = reading_for(config, inputs.classes)
    collate = Collator(tokenizer, data.max_tokens, with_text=inputs.classes is None, with_labels=inputs.classes is not None)
    workers = max(data.num_workers, 1)
    stream = ShardStream(inputs.shards, ClipDecoder(data.frames, image_size, train=True).from_bytes, reading,
                         seed=config.run.seed, rank=rank, world=world, workers=workers, shuffle=data.shuffle,
                         buffer=data.shuffle_buffer)
    train = make_loader(stream, data.batch_size, collate, data.num_workers, drop_last=True)
    val = None
    if inputs.val:
        val_stream = ShardStream(inputs.val, ClipDecoder(data.frames, image_size, train=False).from_bytes, reading,
                                 seed=0, workers=workers, shuffle=False, buffer=1)  # in order: no window to hold
        val = make_loader(val_stream, data.val_batch_size, collate, data.num_workers)
    return Loaders(train=train, sampler=None, val=val, train_size=inputs.samples, missing=0, stream=stream,
                   stream_state=stream.fresh_state())


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """A warning the first time a cause is met in this process (the message without keys, paths
    and numbers), debug after that: a bad batch of a million-sample stream is one line."""
    cause = re.sub(r"\S*[/\\]\S*|\d+", "#", re.sub(r"sample \S+ of \S+", "sample", message))
    if cause in _WARNED:
        logger.debug("%s", message)
        return
    _WARNED.add(cause)
    logger.warning("%s (other samples skipped for this cause are logged at debug level)", message)
