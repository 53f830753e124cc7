"""The synthetic world: deterministic by seed, motion goes where the caption says, held-out
splits hold out, and every format writer produces files."""

from __future__ import annotations

import av
import numpy as np
import pytest

from stanchat.datasets import FORMATS
from stanchat.errors import StanchatError
from training.synthworld import (
    COLOURS,
    DIRECTIONS,
    NOISE_WORDS,
    WRITERS,
    Actor,
    ClipSpec,
    Event,
    WorldConfig,
    all_combinations,
    caption,
    contrast_caption,
    flipped,
    holdout_combinations,
    qa_pairs,
    render_clip,
    render_still,
    sample_specs,
    write_dataset,
)
from training.synthworld.__main__ import main

CONFIG = WorldConfig(frames=10)


def _clip(motion: str, *actors: Actor, seed: int = 7) -> ClipSpec:
    return ClipSpec("c0", (Event(motion, actors or (Actor("red", "circle"),)),), seed=seed)


def _mask(frame: np.ndarray, colour: str, tol: float = 60.0) -> np.ndarray:
    """(H, W) bool: pixels close to an actor colour."""
    return np.linalg.norm(frame.astype(np.float32) - np.asarray(COLOURS[colour], np.float32), axis=-1) < tol


def _centroids(frames: np.ndarray, colour: str = "red") -> np.ndarray:
    """(T, 2) x, y centroid of the colour's pixels in each frame."""
    out = []
    for frame in frames:
        ys, xs = np.nonzero(_mask(frame, colour))
        out.append((xs.mean(), ys.mean()))
    return np.asarray(out)


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_same_seed_same_specs_and_frames():
    config = WorldConfig(distractor_prob=0.5, noise_prob=0.5)
    a, b = sample_specs(20, 3, config), sample_specs(20, 3, config)
    assert a == b
    assert a != sample_specs(20, 4, config)
    assert all(np.array_equal(render_clip(x, config), render_clip(y, config)) for x, y in zip(a[:5], b[:5]))
    assert not np.array_equal(render_clip(a[0], config), render_clip(a[1], config))


def test_written_annotations_are_identical_for_one_seed(tmp_path):
    one = write_dataset(tmp_path / "a", "msrvtt", n=4, seed=5, config=CONFIG)
    two = write_dataset(tmp_path / "b", "msrvtt", n=4, seed=5, config=CONFIG)
    assert one.ann.read_bytes() == two.ann.read_bytes()
    assert np.array_equal(_decode(one.files[0]), _decode(two.files[0]))


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shape_moves_in_the_captioned_direction(direction, seed):
    spec = _clip(direction, seed=seed)
    path = _centroids(render_clip(spec, CONFIG))
    axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[direction]
    steps = np.diff(path[:, axis]) * sign
    assert (steps > 0).all()  # every frame moves further the captioned way
    assert steps.sum() > 0.35 * CONFIG.size  # and far: 40-55% of the frame
    assert np.ptp(path[:, 1 - axis]) < 0.5  # no drift across
    assert caption(spec, template=0) == f"a red circle moves {direction}"


def test_direction_survives_video_encoding(tmp_path):
    out = write_dataset(tmp_path, "jsonl", n=6, seed=2, config=WorldConfig(motions=("left", "right"), frames=8))
    for spec, path in zip(out.specs, out.files):
        actor, motion = spec.events[0].actors[0], spec.events[0].motion
        frames = _decode(path)
        assert frames.shape == (8, 64, 64, 3)
        xs = _centroids(frames, actor.colour)[:, 0]
        assert (xs[-1] - xs[0]) * (1 if motion == "right" else -1) > 15


@pytest.mark.parametrize("motion", ["grow", "shrink"])
def test_size_changes_as_captioned(motion):
    areas = [_mask(f, "red").sum() for f in render_clip(_clip(motion), CONFIG)]
    steps = np.diff(areas) * (1 if motion == "grow" else -1)
    assert (steps > 0).all() and max(areas) > 4 * min(areas)


def test_shapes_appear_in_the_captioned_order():
    actors = (Actor("red", "circle"), Actor("blue", "square"), Actor("yellow", "triangle"))
    spec = _clip("appear", *actors)
    frames = render_clip(spec, CONFIG)
    first_seen = [next(t for t, f in enumerate(frames) if _mask(f, a.colour).any()) for a in actors]
    assert first_seen[0] == 0 and first_seen[0] < first_seen[1] < first_seen[2]
    assert caption(spec, template=0) == "a red circle appears, then a blue square, then a yellow triangle"
    assert qa_pairs(spec) == [("Which shape appears first?", "red circle"), ("Which shape appears last?", "yellow triangle")]


def test_contrast_caption_differs_only_in_direction():
    for spec in sample_specs(30, 0, WorldConfig(noise_prob=1.0)):
        true, contrast = caption(spec, noise=False), contrast_caption(spec)
        assert true != contrast
        motion = spec.events[0].motion
        if motion != "appear":
            changed = {w for w in true.split() if w not in contrast.split()}
            assert changed <= {"left", "right", "up", "down", "upwards", "downwards", "grows", "shrinks",
                               "growing", "shrinking", "bigger", "smaller"}
        assert flipped(flipped(spec)) == spec


def test_noise_words_and_distractors():
    config = WorldConfig(noise_prob=1.0, distractor_prob=1.0)
    for spec in sample_specs(20, 1, config):
        noisy, clean = caption(spec).split(), caption(spec, noise=False)
        words = [*spec.noise_prefix, *spec.noise_suffix]
        assert 1 <= len(words) <= config.max_noise_words and set(words) <= set(NOISE_WORDS)
        assert " ".join(noisy[len(spec.noise_prefix): len(noisy) - len(spec.noise_suffix)]) == clean
        hidden = [e for e in spec.events if not e.captioned]
        assert len(hidden) == 1 and spec.events.index(hidden[0]) in (0, len(spec.events) - 1)
        assert not any(a.name in clean for a in hidden[0].actors)


def test_qa_answers_match_the_spec():
    for spec in sample_specs(40, 2, WorldConfig(distractor_prob=0.5)):
        event = spec.captioned[0]
        for question, answer in qa_pairs(spec):
            if question.startswith("Which way"):
                assert answer == event.motion and event.actors[0].name in question
            if question.startswith("What colour"):
                assert answer == event.actors[0].colour


def test_holdout_split_keeps_combinations_out_of_training():
    held = holdout_combinations(6, seed=1)
    assert len(held) == 6 and held == holdout_combinations(6, seed=1)
    kept = [c for c in all_combinations() if c not in held]
    for i in range(3):
        assert {c[i] for c in kept} == {c[i] for c in all_combinations()}
    config = WorldConfig(distractor_prob=0.5)
    for spec in sample_specs(200, 0, config, exclude=held):
        assert not spec.combinations() & held
    for spec in sample_specs(50, 1, config, only=held):
        assert all(e.combinations() & held for e in spec.captioned)
        assert not any(e.combinations() & held for e in spec.events if not e.captioned)


def test_held_out_recognition_clips_keep_to_the_format_motions(tmp_path):
    held = holdout_combinations(10, seed=3)
    out = write_dataset(tmp_path, "ucf101", n=20, seed=0, config=CONFIG, only=held)
    assert all(s.events[0].motion != "appear" and s.events[0].combinations() <= held for s in out.specs)


@pytest.mark.parametrize("motion, sign", [("left", -1), ("right", 1)])
def test_still_shows_a_trail_behind_the_shape(motion, sign):
    image = render_still(_clip(motion), CONFIG)
    assert image.shape == (64, 64, 3)
    solid = np.nonzero(_mask(image, "red", tol=30))[1].mean()
    trail = np.nonzero(np.abs(image.astype(int) - 24).sum(-1) > 20)[1].mean()
    assert (solid - trail) * sign > 3  # the opaque copy leads, the faint trail lies behind


def test_every_format_has_a_writer(tmp_path):
    assert set(WRITERS) == set(FORMATS) - {"webdataset"}  # shards are written by write_shards (--format webdataset)


def test_cli_writes_a_dataset(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--format", "jsonl", "--n", "3", "--stills"]) == 0
    assert len(list((tmp_path / "stills").glob("*.png"))) == 3
    assert "jsonl: 3 files" in capsys.readouterr().out
    assert main(["--out", str(tmp_path), "--format", "csv", "--motions", "left,spin"]) == 2
    assert "unknown motion" in capsys.readouterr().err


def test_motion_stills_are_written_beside_one_event_clips_and_read_back(tmp_path):
    from stanchat.datasets import read_dataset
    from training.synthworld.render import has_still

    config = WorldConfig(size=16, frames=8, distractor_prob=0.5)
    out = write_dataset(tmp_path, "jsonl", n=12, seed=0, split="train", config=config, motion_stills=True)
    records = read_dataset("jsonl", tmp_path, split="train")
    eligible = [has_still(spec) for spec in out.specs]
    assert any(eligible) and not all(eligible)  # distractors and "appear" have no single-motion still
    assert [r.still is not None for r in records] == eligible
    for record, spec in zip(records, out.specs):
        assert record.video.suffix == ".mp4"
        if record.still is not None:
            assert record.still.is_file() and record.still.name == f"{spec.clip_id}.png"
    with pytest.raises(StanchatError, match="only beside the videos"):
        write_dataset(tmp_path / "x", "jsonl", n=2, stills=True, motion_stills=True)
    with pytest.raises(StanchatError, match="only beside the videos"):
        write_dataset(tmp_path / "y", "msrvtt", n=2, motion_stills=True)
