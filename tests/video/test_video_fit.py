"""Frames fitted in the decoder (`load_video(..., fit=)`) give the pixels of today's path exactly.

Today's path decodes at the display size and the main process resizes and crops (`Preprocessor`);
with a fit the decode worker resizes and crops each frame as it decodes it. Both run torchvision's
uint8 resize (integer arithmetic: the same output whatever the process or thread count) on the same
upright pictures, so pixel_values must be bit-identical, and match transformers' processors within
the float tolerance the preprocessing tests use.
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import REPO, real_clip
from PIL import Image
from transformers import CLIPImageProcessor, LlavaNextImageProcessor
from videogen import make_clip

from stanchat.errors import StanchatError
from stanchat.video import Fit, Preprocessor, load_video
from tests.floats import FLOAT32
from tests.tiny_llava import tiny_models  # noqa: F401  (fixture)

T = 6
# crop smaller than size: a fitted frame (crop x crop) must not be resized again by the Preprocessor
SMALL = CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})
LLAVA_15 = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
# LLaVA-NeXT: its base image is the whole frame squashed to size x size (pixel_values[:, 0])
NEXT = LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                               image_grid_pinpoints=[[32, 64], [64, 32]])
SMALL_FIT = Preprocessor.from_image_processor(SMALL).fit
EXAMPLE = REPO / "examples" / "blue-triangle-left.mp4"
REAL = ["yoga.mp4", "decord_video_90.mov", "exoplayer_sample.mkv", "mmaction2_test.avi",
        "bear-vp9-odd-dimensions.webm", "foreman_hevc.mp4", "cockatoo.mp4", "webrtc_chrome.webm"]


def _both_paths(path, processor, backend="auto", frames=T, timeout=30.0):
    """(pixel_values today, pixel_values fitted, today's full-size clip, the fitted clip)."""
    pre = Preprocessor.from_image_processor(processor)
    full = load_video(path, frames, backend=backend, timeout=timeout)
    fitted = load_video(path, frames, backend=backend, timeout=timeout, fit=pre.fit)
    return pre(full), pre(fitted), full, fitted


def _reference(processor, frames: np.ndarray) -> torch.Tensor:
    """transformers' pixel_values for full-size frames: (1, T, 3, crop, crop)."""
    pixels = processor(images=list(frames), return_tensors="pt")["pixel_values"]
    return (pixels[:, 0] if pixels.ndim == 5 else pixels)[None]  # LLaVA-NeXT: (T, patches, ...) -> base image


def _check(path, processor, backend="auto", frames=T, timeout=30.0):
    today, new, full, fitted = _both_paths(path, processor, backend, frames, timeout)
    crop = Preprocessor.from_image_processor(processor).crop_size
    assert fitted.frames.shape == (len(full.frames), crop, crop, 3) and fitted.frames.dtype == np.uint8
    assert (fitted.width, fitted.height, fitted.indices, fitted.decoder) == (full.width, full.height, full.indices,
                                                                           full.decoder)
    assert torch.equal(new, today)
    assert torch.allclose(new, _reference(processor, full.frames), **FLOAT32)
    return fitted


@pytest.mark.parametrize("backend", ["auto", "pyav"])
@pytest.mark.parametrize("name", REAL)
def test_real_clips_give_todays_pixels(name, backend):
    _check(real_clip(name), SMALL, backend)


@pytest.mark.parametrize("processor", [LLAVA_15, NEXT], ids=["llava-1.5", "llava-next-squash"])
def test_real_clip_at_the_models_sizes(processor):
    clip = _check(real_clip("yoga.mp4"), processor, frames=4)
    assert clip.fit == Preprocessor.from_image_processor(processor).fit


@pytest.mark.parametrize("processor", [SMALL, NEXT], ids=["crop", "squash"])
@pytest.mark.parametrize("rotation", [90, 270])
def test_rotated_clip_is_upright_before_the_fit(tmp_path, rotation, processor):
    path = make_clip(tmp_path / "rotated.mp4", frames=12, width=96, height=64, rotation=rotation)
    clip = _check(path, processor)
    assert (clip.width, clip.height) == (64, 96)


def test_non_square_pixels_are_shown_wide_before_the_fit(tmp_path):
    path = make_clip(tmp_path / "sar.mp4", frames=12, width=64, height=48, pixel_aspect=Fraction(3, 2))
    for backend in ("auto", "pyav"):
        clip = _check(path, SMALL, backend)
        assert (clip.width, clip.height) == (96, 48)


def test_gif_stills_and_folders(tmp_path):
    _check(make_clip(tmp_path / "anim.gif", "gif", frames=10, width=80, height=50), SMALL)
    frame = np.random.default_rng(0).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    Image.fromarray(frame).save(tmp_path / "still.png")
    Image.fromarray(frame).save(tmp_path / "still.jpg", quality=90)
    for still in ("still.png", "still.jpg"):
        assert _check(tmp_path / still, SMALL, frames=2).frames.shape == (2, 32, 32, 3)  # one picture, repeated
        _check(tmp_path / still, NEXT, frames=1)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.roll(frame, 7 * i, axis=1)).save(folder / f"{i}.jpg")
    _check(folder, SMALL, frames=3)


def test_in_process_decoding_fits_the_same(tmp_path):
    path = make_clip(tmp_path / "clip.mp4", frames=12, width=96, height=64)
    _check(path, SMALL, "pyav", timeout=None)


@pytest.mark.slow
def test_a_large_frame_comes_back_at_the_crop_size(tmp_path):
    path = make_clip(tmp_path / "large.mp4", frames=3, width=2000, height=2000, options={"preset": "ultrafast"})
    clip = _check(path, LLAVA_15, frames=3)
    assert clip.frames.shape == (3, 336, 336, 3) and (clip.width, clip.height) == (2000, 2000)
    wide = make_clip(tmp_path / "1080p.mp4", frames=3, width=1920, height=1080, options={"preset": "ultrafast"})
    assert load_video(wide, 3, fit=SMALL_FIT).frames.shape == (3, 32, 32, 3)


def test_a_fitted_clip_passes_the_preprocessor_unchanged(tmp_path):
    path = make_clip(tmp_path / "clip.mp4", frames=12, width=96, height=64)
    clip = load_video(path, 4, fit=SMALL_FIT)
    pre = Preprocessor.from_image_processor(SMALL)
    assert np.array_equal(pre.pictures(clip), clip.frames)  # no second resize of the 32 px squares to 40 px
    other = Preprocessor(size=24, crop_size=16)  # another model's geometry: the squares are fitted again
    assert other(clip).shape == (1, 4, 3, 16, 16)
    assert "fit" not in clip.summary()


def test_fit_and_size_are_refused_together():
    with pytest.raises(StanchatError, match="size or fit, not both"):
        load_video(EXAMPLE, 4, size=32, fit=SMALL_FIT)
    with pytest.raises(StanchatError, match="fit must be a stanchat.video.fit.Fit"):
        load_video(EXAMPLE, 4, fit=224)
    with pytest.raises(StanchatError, match="crop_size must be between 1 and size"):
        Fit(16, 32, "bicubic", False)
    with pytest.raises(StanchatError, match="unknown interpolation 'nearest'"):
        Fit(16, 16, "nearest", False)


def test_the_worker_loads_torch_only_for_a_fit():
    code = "import sys, stanchat.video.worker; print(sorted({'torch', 'torchvision'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_chat_decodes_paths_with_its_fit(tiny_models, monkeypatch):
    from stanchat import video
    from stanchat.chat import load
    from stanchat.cli import main

    from stanchat import chat as chat_module
    from stanchat.options import VideoOptions

    chat = load(llava=tiny_models["default"], stan=tiny_models["stan"], device="cpu")
    fitted = chat.encode(tiny_models["video"], VideoOptions(frames=4))
    full = chat.encode(load_video(tiny_models["video"], frames=4))  # today's path: a full-size clip
    crop = chat.preprocessor.crop_size
    assert fitted.clip.fit == chat.preprocessor.fit and fitted.clip.frames.shape == (4, crop, crop, 3)
    assert full.clip.fit is None
    assert torch.equal(chat.preprocess(fitted.clip), chat.preprocess(full.clip))
    assert torch.equal(fitted.features, full.features)
    fits, load_video_ = [], video.load_video

    def watched(*args, **kwargs):
        fits.append(kwargs.get("fit"))
        return load_video_(*args, **kwargs)

    monkeypatch.setattr(chat_module, "load_video", watched)
    assert main(["ask", tiny_models["video"], "What happens?", "--llava", tiny_models["default"], "--stan",
                 tiny_models["stan"], "--frames", "2", "--max-new-tokens", "2", "--json"]) == 0
    assert fits == [chat.preprocessor.fit]  # `stanchat ask` decodes once, fitted


def _maps_torch(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return "libtorch" in maps.read()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/maps")
@pytest.mark.parametrize("torch_first", [False, True])
def test_a_worker_loads_torch_for_fits_only(tmp_path, monkeypatch, torch_first):
    from stanchat.video.watchdog import _POOL, prestart

    monkeypatch.setattr(_POOL, "idle", [])  # this test's own workers (the module's are kept aside)
    path = make_clip(tmp_path / "clip.mp4", frames=12, width=96, height=64)
    prestart(torch=torch_first)
    prestart(torch=torch_first)  # one is idle already: nothing more starts
    assert len(_POOL.idle) == 1
    worker = _POOL.idle[0]
    try:
        assert load_video(path, 2).frames.shape == (2, 64, 96, 3) and _POOL.idle == [worker]  # it took the job
        assert _maps_torch(worker.process.pid) == torch_first  # prestarted with torch, or not loaded for no fit
        assert load_video(path, 2, fit=SMALL_FIT).frames.shape == (2, 32, 32, 3) and _POOL.idle == [worker]
        assert _maps_torch(worker.process.pid)  # a job with a fit loads it
    finally:
        worker.kill()
