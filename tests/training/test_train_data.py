"""Training data: the resumable sampler, substitution of undecodable videos, collation, the decoder,
and loaders over small files written in every real annotation format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from stanchat.errors import StanchatError, VideoError
from tests.training_world import world  # noqa: F401  (a fixture)
from training.config import load_config
from training.data import ClipDataset, Collator, ResumableSampler, build_loaders, read_inputs
from training.decode import ClipDecoder
from training.tiny_backbone import tiny_tokenizer


def test_sampler_is_a_seeded_permutation_per_epoch():
    sampler = ResumableSampler(10, batch_size=3, seed=5)
    epoch0 = list(sampler)
    assert len(epoch0) == 9 == len(sampler) and len({i for i, _ in epoch0}) == 9  # 3 whole batches, no repeats
    assert list(ResumableSampler(10, batch_size=3, seed=5)) == epoch0
    sampler.set_position(1, 0)
    epoch1 = list(sampler)
    assert [i for i, _ in epoch1] != [i for i, _ in epoch0]
    assert {s for _, s in epoch1}.isdisjoint({s for _, s in epoch0})  # fresh augmentation every epoch


def test_sampler_resumes_mid_epoch_and_shards_ranks():
    full = ResumableSampler(20, batch_size=2, seed=0)
    full.set_position(3, 0)
    tail = ResumableSampler(20, batch_size=2, seed=0)
    tail.set_position(3, 2)  # two micro-batches of epoch 3 already done
    assert list(tail) == list(full)[4:]
    ranks = [ResumableSampler(21, batch_size=2, seed=0, rank=r, world=3) for r in range(3)]
    shards = [[i for i, _ in s] for s in ranks]
    assert [len(s) for s in shards] == [6, 6, 6]  # 7 each, cut to whole batches
    assert not set(shards[0]) & set(shards[1]) and not set(shards[1]) & set(shards[2])


@dataclass(frozen=True)
class Rec:
    video: Path
    video_id: str
    text: str | None = None
    label: str | None = None
    start: float | None = None
    end: float | None = None
    still: Path | None = None


def fake_decode(record, seed):
    if record.video_id.startswith("bad"):
        raise VideoError(f"could not decode {record.video}")
    return torch.full((2, 3, 4, 4), float(record.video_id[-1]))


def test_undecodable_videos_are_replaced_and_counted():
    records = [Rec(Path(n), n, text=f"a red circle {n}") for n in ("ok0", "bad1", "bad2", "ok3")]
    dataset = ClipDataset(records, fake_decode)
    item = dataset[(1, 0)]
    assert item["video"] == "ok3" and item["skipped"] == 2 and item["text"] == "a red circle ok3"
    assert dataset[(0, 0)]["skipped"] == 0
    all_bad = ClipDataset(records[1:3], fake_decode, attempts=2)[(0, 0)]
    assert all_bad == {"pixel_values": None, "skipped": 2}
    batch = Collator(tiny_tokenizer(), 8, with_text=True, with_labels=False)([item, all_bad, dataset[(0, 0)]])
    assert batch["size"] == 2 and batch["skipped"] == 4 and batch["videos"] == ["ok3", "ok0"]
    assert batch["pixel_values"].shape == (2, 2, 3, 4, 4) and batch["input_ids"].shape == (2, 8)


def test_collator_pads_to_max_tokens_and_keeps_eos():
    tokenizer = tiny_tokenizer()
    items = [{"pixel_values": torch.zeros(2, 3, 4, 4), "text": t, "video": "v", "skipped": 0, "label": None}
             for t in ("a red circle", "a red circle moves left then a blue square moves right")]
    batch = Collator(tokenizer, 6, with_text=True, with_labels=False)(items)
    assert batch["input_ids"].shape == (2, 6)  # one shape on every process: the gather needs it
    assert (batch["input_ids"][:, -1] == tokenizer.pad_token_id).tolist() == [True, False]
    assert batch["input_ids"][1, -1] == tokenizer.eos_token_id  # truncation keeps EOS, where CLIP pools


def test_decoder_is_deterministic_per_seed(world):
    video = next((world / "msrvtt" / "videos").glob("*.mp4"))
    record = Rec(video, "v")
    train = ClipDecoder(frames=4, size=16, train=True)
    a, b, c = train(record, 11), train(record, 11), train(record, 12)
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    val = ClipDecoder(frames=4, size=16, train=False)
    assert torch.equal(val(record, 1), val(record, 2))  # no randomness in validation
    with pytest.raises(VideoError):
        train(Rec(world / "msrvtt" / "train_9k.json", "not-a-video"), 0)


# format -> (task, val split or "")
FORMATS = {
    "webvid": ("pretrain", ""), "msrvtt": ("retrieval", "test"), "didemo": ("retrieval", ""),
    "lsmdc": ("retrieval", ""), "jsonl": ("pretrain", ""), "jsonl-stills": ("pretrain", ""),
    "jsonl-motion": ("pretrain", ""), "csv": ("retrieval", ""),
    "k400": ("recognition", ""), "ucf101": ("recognition", "test"), "hmdb51": ("recognition", ""),
}


def loaders_for(world: Path, name: str, *extra: str):
    task, val = FORMATS[name]
    dataset = "jsonl" if name.startswith("jsonl") else name
    config = load_config(None, [f"task={task}", f"data.dataset={dataset}", f"data.root={world / name}",
                                f"data.val_split={val}", "data.frames=4", "data.batch_size=2", "data.max_tokens=16",
                                "data.num_workers=0", *extra])
    inputs = read_inputs(config)
    return inputs, build_loaders(config, inputs, tiny_tokenizer(), 16, rank=0, world=1)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_loaders_in_every_format(world, name):
    inputs, loaders = loaders_for(world, name)
    batch = next(iter(loaders.train))
    assert batch["pixel_values"].shape == (2, 4, 3, 16, 16) and batch["skipped"] == 0
    assert torch.isfinite(batch["pixel_values"]).all() and batch["pixel_values"].std() > 0
    if FORMATS[name][0] == "recognition":
        assert batch["labels"].dtype == torch.long and (batch["labels"] < len(inputs.classes)).all()
        assert "input_ids" not in batch
    else:
        assert batch["input_ids"].shape == (2, 16) and inputs.classes is None
        assert (batch["input_ids"] > 3).any()  # captions tokenise to real words, not all <unk>
    assert (loaders.val is not None) == bool(FORMATS[name][1])


def test_missing_videos_are_skipped_and_counted(tmp_path):
    from training.synthworld import write_dataset
    from tests.training_world import WORLD

    write_dataset(tmp_path, "webvid", n=6, seed=0, split="train", config=WORLD, missing=2)
    config = load_config(None, ["data.dataset=webvid", f"data.root={tmp_path}"])
    inputs = read_inputs(config)
    assert (len(inputs.train), inputs.missing) == (4, 2)


def test_corrupt_video_mid_epoch_is_replaced(tmp_path):
    from training.synthworld import write_dataset
    from tests.training_world import WORLD

    data = write_dataset(tmp_path, "webvid", n=4, seed=0, split="train", config=WORLD)  # one caption per video
    config = load_config(None, ["data.dataset=webvid", f"data.root={tmp_path}", "data.frames=4", "data.batch_size=2",
                                "data.num_workers=0", "data.max_tokens=16"])
    inputs = read_inputs(config)  # all present at the start
    data.files[1].write_bytes(b"\x00not a video at all" * 10)  # corrupted while training runs
    loaders = build_loaders(config, inputs, tiny_tokenizer(), 16, rank=0, world=1)
    batches = list(loaders.train)  # one epoch: never raises
    assert [b["size"] for b in batches] == [2, 2]  # batches keep their size
    assert sum(b["skipped"] for b in batches) == 1  # the bad clip, replaced by the next record
    assert sorted(v for b in batches for v in b["videos"]).count(inputs.train[2].video_id) == 2


def test_recognition_labels_must_be_in_the_class_file(world, tmp_path):
    (tmp_path / "classes.txt").write_text("moving left\nmoving right\n")
    with pytest.raises(StanchatError, match="labels are not in the class list"):
        loaders_for(world, "ucf101", f"data.class_names={tmp_path / 'classes.txt'}")


def test_motion_stills_are_batched_with_their_clips_when_the_loss_asks_for_them(world):
    records = read_inputs(load_config(None, ["data.dataset=jsonl", f"data.root={world / 'jsonl-motion'}"])).train
    with_still = [r.still is not None for r in records]
    assert any(with_still) and not all(with_still)  # "appear" clips have no still
    inputs, loaders = loaders_for(world, "jsonl-motion", "model.motion_still_weight=1.0", "data.batch_size=6")
    batch = next(iter(loaders.train))
    assert batch["stills"].shape == (6, 3, 16, 16) and batch["has_still"].dtype == torch.bool
    assert batch["has_still"].sum() == sum(with_still)
    assert (batch["stills"][~batch["has_still"]] == 0).all() and batch["stills"][batch["has_still"]].std() > 0
    _, plain = loaders_for(world, "jsonl-motion")  # weight 0: no still is decoded
    assert "stills" not in next(iter(plain.train))


def test_a_motion_still_gets_its_clips_crop(world):
    image = next((world / "jsonl-stills" / "stills").glob("*.png"))
    record = Rec(image, "v", still=image)  # the "clip" is the still itself
    decode = ClipDecoder(frames=1, size=16, train=True)
    torch.testing.assert_close(decode.still(record, 7), decode(record, 7)[0])
    assert not torch.equal(decode.still(record, 7), decode.still(record, 8))


def test_motion_still_weight_without_stills_is_one_clear_error(world):
    with pytest.raises(StanchatError, match="no training record names a `still`"):
        loaders_for(world, "jsonl", "model.motion_still_weight=1.0")
