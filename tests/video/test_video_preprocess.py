"""Preprocessing to the tower's input, checked against transformers' CLIPImageProcessor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import CLIPImageProcessor

from stanchat.errors import StanchatError
from stanchat.video import CLIP_MEAN, CLIP_STD, Preprocessor, SampledFrames, preprocess


def _frames(t=3, h=24, w=40, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_shape_and_normalisation_by_hand():
    frames = _frames(h=16, w=20)  # shorter side already 16: no resize, just the crop
    pixels = Preprocessor(size=16, crop_size=16)(frames)
    assert pixels.shape == (1, 3, 3, 16, 16) and pixels.dtype == torch.float32
    crop = frames[:, :, 2:18].astype(np.float64) / 255  # (20 - 16) // 2 = 2 columns off the left
    expected = (crop - np.array(CLIP_MEAN)) / np.array(CLIP_STD)  # (T, H, W, 3)
    assert np.allclose(pixels[0].permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (9, 9), (100, 60)])
def test_matches_clip_image_processor(shape):
    processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    frames = _frames(t=2, h=shape[0], w=shape[1])
    ours = Preprocessor.from_image_processor(processor)(frames)[0]  # (T, 3, 16, 16)
    theirs = processor(images=list(frames), return_tensors="pt")["pixel_values"]  # (T, 3, 16, 16)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-5)  # same resize kernel, crop and normalisation


def test_batches_clips_and_arrays_of_equal_length():
    clip = SampledFrames(_frames(h=20, w=30), [0.0, 1.0, 2.0], [0, 1, 2], 1.0, 3.0, 30, 20, 3, "pyav", "x.mp4")
    pixels = preprocess([clip, _frames(h=50, w=16, seed=1)], size=8, crop_size=8)
    assert pixels.shape == (2, 3, 3, 8, 8)
    with pytest.raises(StanchatError, match="same number of frames"):
        preprocess([clip, _frames(t=4)], size=8, crop_size=8)


def test_processor_config_file_and_folder(tmp_path):
    config = {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}, "image_mean": [0.5] * 3,
              "image_std": [0.25] * 3, "resample": 3, "do_center_crop": True, "rescale_factor": 1 / 255}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    pre = Preprocessor.from_processor_config(tmp_path)
    assert (pre.size, pre.crop_size, pre.mean, pre.std) == (336, 336, (0.5,) * 3, (0.25,) * 3)
    assert pre.interpolation == "bicubic"
    assert Preprocessor.from_processor_config(tmp_path / "preprocessor_config.json", augment=True).augment


@pytest.mark.parametrize(
    "config, words",
    [
        ({"size": {"height": 224, "width": 224}}, "shortest_edge"),
        ({"crop_size": {"height": 224, "width": 200}}, "not square"),
        ({"resample": 0}, "resample 0 is not supported"),
        ({"do_center_crop": False}, "without resize and centre crop"),
    ],
)
def test_configs_we_cannot_mimic_are_refused(config, words):
    with pytest.raises(StanchatError, match=words):
        Preprocessor.from_processor_config(config)


def test_random_resized_crop_is_per_clip_and_seeded():
    frames = np.repeat(_frames(t=1, h=32, w=48), 4, axis=0)  # four identical frames
    pre = Preprocessor(size=16, crop_size=16, augment=True)
    a = pre(frames, generator=torch.Generator().manual_seed(1))
    b = pre(frames, generator=torch.Generator().manual_seed(1))
    c = pre(frames, generator=torch.Generator().manual_seed(2))
    assert a.shape == (1, 4, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert all(torch.equal(a[0, 0], a[0, t]) for t in range(4))  # one box for every frame of the clip
    assert not torch.equal(a, Preprocessor(size=16, crop_size=16)(frames))


def test_bad_settings_are_refused():
    with pytest.raises(StanchatError, match="crop_size"):
        Preprocessor(size=16, crop_size=32)
    with pytest.raises(StanchatError, match="uint8"):
        Preprocessor()(np.zeros((2, 8, 8, 3), np.float32))
