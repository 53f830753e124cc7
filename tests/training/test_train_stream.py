"""The shard stream (`training.stream`): windowed shuffle, positions, and a resume that continues
exactly, with and without DataLoader workers; bad samples skipped and counted."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from stanchat.errors import StanchatError
from training.stream import Position, Reading, ShardStream, StreamState, windows


def stream_items(lengths: list[int], start: Position = Position()):
    """(shard, offset, name) items of shards of the given lengths, from `start` on."""
    for shard in range(start.shard, len(lengths)):
        for offset in range(start.offset if shard == start.shard else 0, lengths[shard]):
            yield shard, offset, f"{shard}:{offset}"


def shuffled(window: int, length: int) -> list[int]:
    import random

    order = list(range(length))
    random.Random(window).shuffle(order)
    return order


@pytest.mark.parametrize("size", [1, 3, 4, 50])
def test_windows_emit_each_item_once_and_resume_from_any_position(size):
    lengths = [4, 0, 5, 3]  # an empty shard too
    full = list(windows(stream_items(lengths), Position(), size, shuffled))
    names = [item[2] for _, item, _ in full]
    assert sorted(names) == sorted(name for *_, name in stream_items(lengths))  # each once
    assert [slot for slot, _, _ in full] == list(range(len(full)))
    if size > 1:
        assert names != [name for *_, name in stream_items(lengths)]  # shuffled
    for k, (_, _, after) in enumerate(full):  # stop after any slot, start again from its position
        rest = list(windows(stream_items(lengths, after), after, size, shuffled))
        assert rest == full[k + 1:]


def test_windows_hold_at_most_one_window():
    read = []

    def counted():
        for item in stream_items([7, 6]):
            read.append(item)
            yield item

    emitted = 0
    for _ in windows(counted(), Position(), 4, shuffled):
        emitted += 1
        assert len(read) - emitted <= 4  # read but not yet emitted


def test_windows_without_shuffle_keep_the_stored_order():
    in_order = lambda window, length: list(range(length))  # noqa: E731
    got = [item[2] for _, item, _ in windows(stream_items([3, 2]), Position(), 2, in_order)]
    assert got == ["0:0", "0:1", "0:2", "1:0", "1:1"]


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> str:
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, payload in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return str(path)


@pytest.fixture
def shards(tmp_path) -> list[str]:
    """5 shards of 1-4 samples; the video bytes are the key (the fake decoder reads them)."""
    out = []
    for s, n in enumerate([4, 3, 1, 4, 2]):
        samples = [(f"s{s}k{i}", {"mp4": f"s{s}k{i}".encode(), "txt": b"a caption"}) for i in range(n)]
        out.append(write_shard(tmp_path / f"{s:05d}.tar", samples))
    return out


def fake_decode(data: bytes, suffix: str, seed: int) -> torch.Tensor:
    if data.startswith(b"bad"):
        raise StanchatError("not a video")
    return torch.tensor([seed])


def keys_of(samples: list[dict]) -> list[str]:
    return [s["video"] for s in samples]


def stream(shards: list[str], **kw) -> ShardStream:
    return ShardStream(shards, fake_decode, Reading(), seed=3, buffer=kw.pop("buffer", 3), **kw)


def loader(dataset: ShardStream, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=2, num_workers=workers, drop_last=True, collate_fn=lambda batch: batch,
                      generator=torch.Generator().manual_seed(0))


def seen(batches: list[list[dict]]) -> list[list[tuple[str, int]]]:
    """(key, augmentation seed) of every sample, batch by batch (the fake decoder's pixels are the seed)."""
    return [[(s["video"], int(s["pixel_values"])) for s in batch] for batch in batches]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_loader_gives_the_same_batches_in_the_same_order(shards, workers):
    data = stream(shards, workers=max(workers, 1))
    for epoch in (0, 1):
        data.start(epoch, data.fresh_state())
        full = list(loader(data, workers))
        assert len({k for batch in full for k in keys_of(batch)}) == 2 * len(full)  # none twice
        for stop in range(len(full)):  # consume `stop` batches, checkpoint, resume
            state = data.fresh_state()
            for batch in full[:stop]:
                state.consumed(*batch[-1]["stream"])
            data.start(epoch, state)
            assert seen(list(loader(data, workers))) == seen(full[stop:])  # the same clips, augmented alike


def test_windows_shuffle_the_samples_of_a_shard(shards):
    order = {}
    for shuffle in (False, True):
        data = stream(shards[:1], shuffle=shuffle, buffer=4)
        data.start(0, data.fresh_state())
        order[shuffle] = keys_of(list(data))
    assert order[False] == ["s0k0", "s0k1", "s0k2", "s0k3"]
    assert sorted(order[True]) == order[False] and order[True] != order[False]


def test_readers_of_two_processes_see_disjoint_samples_that_make_the_whole_set(shards):
    every = {f"s{s}k{i}" for s, n in enumerate([4, 3, 1, 4, 2]) for i in range(n)}
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            data = stream(shards, rank=rank, world=2, workers=2)
            data.start(epoch, data.fresh_state())
            seen += keys_of(list(data_for_each_worker(data)))
        assert sorted(seen) == sorted(every)


def data_for_each_worker(data: ShardStream):
    """Every sample each of the dataset's workers would emit (run in this process, one by one)."""
    import torch.utils.data as tud

    for worker in range(data.workers):
        info = tud._utils.worker.WorkerInfo(id=worker, num_workers=data.workers, seed=0, dataset=data)
        tud._utils.worker._worker_info = info
        try:
            yield from iter(data)
        finally:
            tud._utils.worker._worker_info = None


def test_bad_samples_are_skipped_counted_and_the_position_moves_past_them(tmp_path):
    good = [(f"k{i}", {"mp4": f"k{i}".encode(), "txt": b"cap"}) for i in range(3)]
    bad = [("nov", {"txt": b"cap"}), ("nocap", {"mp4": b"nocap"}), ("broken", {"mp4": b"bad bytes", "txt": b"cap"})]
    shard = write_shard(tmp_path / "00000.tar", [good[0], *bad, *good[1:]])
    cut = tmp_path / "00001.tar"  # a shard cut short inside its second sample's video
    whole = write_shard(tmp_path / "whole.tar", [("c0", {"mp4": b"c0", "txt": b"cap"}), ("c1", {"mp4": b"c1" * 800, "txt": b"cap"})])
    cut.write_bytes(Path(whole).read_bytes()[:3000])  # headers and data in 512-byte blocks: c1.mp4's data starts at 2560
    after = write_shard(tmp_path / "00002.tar", [("d0", {"mp4": b"d0", "txt": b"cap"})])
    data = stream([shard, str(cut), after], shuffle=False)
    data.start(0, data.fresh_state())
    got = list(data)
    assert keys_of(got) == ["k0", "k1", "k2", "c0", "d0"]
    assert [s["skipped"] for s in got] == [0, 3, 0, 0, 1]  # three bad samples before k1, the cut shard's rest before d0


@pytest.mark.parametrize("change, says", [({"workers": 2}, "data.num_workers readers per process = 1, not 2"),
                                          ({"buffer": 5}, "data.shuffle_buffer = 3, not 5"),
                                          ({"shuffle": False}, "data.shuffle = True, not False")])
def test_a_stream_position_saved_under_another_layout_is_refused(shards, change, says):
    saved = stream(shards).fresh_state()
    with pytest.raises(StanchatError, match=re.escape(says)):
        stream(shards, **change).start(0, saved)
    with pytest.raises(StanchatError, match="the shards"):
        stream(shards[:4]).start(0, saved)


def test_stream_state_round_trips_through_json(shards):
    import json

    state = stream(shards, workers=3).fresh_state()
    state.consumed(1, Position(2, 3, 4, 5))
    again = StreamState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state and again.next_worker == 2
