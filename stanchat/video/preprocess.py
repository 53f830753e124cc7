"""Frames -> the vision tower's input: resize the shorter side (or both sides), centre crop, normalise, batch.

    pre = Preprocessor.from_image_processor(CLIPImageProcessor.from_pretrained(tower))  # or Preprocessor()
    pixels = pre([clip_a, clip_b])                     # (B, T, 3, crop, crop) float32

The steps follow transformers' `CLIPImageProcessor` (torchvision's antialiased bicubic resize on
uint8 pictures, floor-centred crop, (x / 255 - mean) / std), so a frame gives the tower the input its
processor would. With `squash=True` the whole frame is resized to size x size, aspect not kept, as
LLaVA-NeXT's processor makes its base image (chosen from a processor config with `image_grid_pinpoints`).
The resize and crop are `Preprocessor.fit` (`stanchat.video.fit`): pass it to `load_video(..., fit=)` and
the decoder fits each frame as it decodes it; such a clip's frames pass through here unchanged but for
normalisation, giving the same pixels as fitting full-size frames here.
With `augment=True` (training) each clip gets one random resized crop,
the same box for all of its frames so motion is not faked by jitter. torch is imported on first use.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stanchat.errors import StanchatError
from stanchat.video.fit import INTERPOLATIONS, Fit, resize
from stanchat.video.geometry import center_crop_box

if TYPE_CHECKING:
    import numpy as np
    import torch

    from stanchat.video.load import SampledFrames

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP, pixels in [0, 1]
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RANDOM_CROP_TRIES = 10  # boxes drawn before a random resized crop falls back to the centre


@dataclass
class Preprocessor:
    """Resize + centre crop + normalise frames into (B, T, 3, crop_size, crop_size) float32."""

    size: int = 224  # shorter side after resizing, pixels (processor config `size.shortest_edge`)
    crop_size: int = 224  # side of the square centre crop, pixels (processor config `crop_size`)
    mean: tuple[float, float, float] = CLIP_MEAN  # per-channel mean of [0, 1] pixels (`image_mean`)
    std: tuple[float, float, float] = CLIP_STD  # per-channel std of [0, 1] pixels (`image_std`)
    interpolation: str = "bicubic"  # resize filter, "bicubic" or "bilinear" (`resample` 3 or 2)
    squash: bool = False  # resize both sides to `size` (the whole frame, aspect not kept), then the centre crop
    augment: bool = False  # training: a random resized crop per clip instead of resize + centre crop
    scale: tuple[float, float] = (0.5, 1.0)  # augment: area of the crop box as a fraction of the frame
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # augment: aspect (width / height) range of the crop box

    def __post_init__(self) -> None:
        self.fit  # noqa: B018  (building the Fit checks size, crop_size and interpolation)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise StanchatError(f"mean and std need 3 values (RGB) and std > 0, got {self.mean} and {self.std}")
        if not (0 < self.scale[0] <= self.scale[1] <= 1 and 0 < self.ratio[0] <= self.ratio[1]):
            raise StanchatError(
                f"scale must be 0 < lo <= hi <= 1 and ratio 0 < lo <= hi, got {self.scale} and {self.ratio}"
            )

    @property
    def fit(self) -> Fit:
        """The resize and centre crop (augment aside), picklable: give it to `load_video(..., fit=)`."""
        return Fit(self.size, self.crop_size, self.interpolation, self.squash)

    @classmethod
    def from_processor_config(cls, config: Mapping | str | os.PathLike, **overrides) -> Preprocessor:
        """From a transformers image-processor config: a dict, a preprocessor_config.json, or a folder holding one."""
        if not isinstance(config, Mapping):
            path = Path(config)
            path = path / "preprocessor_config.json" if path.is_dir() else path
            if not path.is_file():
                raise StanchatError(f"no image-processor config at {path}")
            config = json.loads(path.read_text())
        return cls(**{**_from_config(config), **overrides})

    @classmethod
    def from_image_processor(cls, processor, **overrides) -> Preprocessor:
        """From a transformers image processor (e.g. CLIPImageProcessor): its size, crop, mean and std."""
        return cls.from_processor_config(processor.to_dict(), **overrides)

    def __call__(
        self, clips: SampledFrames | np.ndarray | Sequence[SampledFrames | np.ndarray], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One clip or a list of B clips (SampledFrames or (T, H, W, 3) uint8 RGB) -> (B, T, 3, crop, crop)."""
        import torch

        batch = [clips] if _is_single(clips) else list(clips)
        lengths = {_frames(c).shape[0] for c in batch}
        if len(lengths) != 1:
            raise StanchatError(
                f"clips in a batch need the same number of frames, got {sorted(lengths)}; load them with the same frames="
            )
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)  # (1, 3, 1, 1): broadcast over T, H, W
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        out = [(self._crop(c, generator) / 255.0 - mean) / std for c in batch]  # B x (T, 3, crop, crop)
        return torch.stack(out)  # (B, T, 3, crop, crop)

    def pictures(self, clip: SampledFrames | np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
        """One clip's frames as the tower is fed them, before normalisation (resized and centre-cropped,
        or squashed): (T, H, W, 3) uint8 -> (T, crop, crop, 3) uint8, e.g. to show them."""
        return self._crop(clip, generator).permute(0, 2, 3, 1).contiguous().numpy()

    def _crop(self, clip: SampledFrames | np.ndarray, generator: torch.Generator | None) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (T, 3, crop, crop) uint8."""
        import torch

        x = torch.from_numpy(_frames(clip)).permute(0, 3, 1, 2)  # (T, H, W, 3) -> (T, 3, H, W), still uint8
        fitted = clip.fit if hasattr(clip, "timestamps") else None  # the Fit the decoder already applied
        if fitted is not None and not self.augment and fitted == self.fit:
            return x  # already (T, 3, crop, crop): what self.fit.frames makes of the full-size frames
        if fitted is not None:  # fitted for another geometry: the squares are fitted again (a second resample,
            # so close to, not exactly, what this processor makes of the source; decode with self.fit for that)
            logger.debug("%s was fitted to %s while decoding; fitting again to %s", clip.path, fitted, self.fit)
        if self.augment:
            height, width = x.shape[-2:]
            top, left, box_h, box_w = _random_box(height, width, self.scale, self.ratio, generator)
            return resize(x[:, :, top : top + box_h, left : left + box_w], self.crop_size, self.crop_size,
                          self.interpolation)
        return self.fit.frames(x)


def preprocess(clips, generator=None, **config) -> torch.Tensor:
    """`Preprocessor(**config)(clips, generator)`: (B, T, 3, crop, crop) float32."""
    return Preprocessor(**config)(clips, generator)


def _from_config(config: Mapping) -> dict:
    """Preprocessor fields from a transformers image-processor config, refusing what we cannot mimic."""
    size, crop = config.get("size", {"shortest_edge": 224}), config.get("crop_size", 224)
    if isinstance(size, Mapping) and "shortest_edge" not in size:
        raise StanchatError(
            f"image-processor size {dict(size)} is not supported: stanchat resizes the shorter side ({{'shortest_edge': N}})"
        )
    if isinstance(crop, Mapping) and crop.get("height") != crop.get("width"):
        raise StanchatError(f"image-processor crop_size {dict(crop)} is not square; stanchat crops squares")
    if not config.get("do_center_crop", True) or not config.get("do_resize", True):
        raise StanchatError("image processors without resize and centre crop are not supported")
    if not config.get("do_rescale", True) or not math.isclose(config.get("rescale_factor", 1 / 255), 1 / 255):
        raise StanchatError("only image processors that rescale pixels by 1/255 are supported")
    resample = int(config.get("resample", 3))
    if resample not in INTERPOLATIONS:
        raise StanchatError(f"resample {resample} is not supported; use {sorted(INTERPOLATIONS)} (bilinear, bicubic)")
    normalize = config.get("do_normalize", True)
    # LLaVA-NeXT's anyres processors (the ones with grid pinpoints) make their base image by resizing the
    # whole picture to size x size before the crop; their tiles are not made (a video is one base image)
    return {
        "squash": "image_grid_pinpoints" in config,
        "size": int(size["shortest_edge"] if isinstance(size, Mapping) else size),
        "crop_size": int(crop["height"] if isinstance(crop, Mapping) else crop),
        "mean": tuple(config.get("image_mean", CLIP_MEAN)) if normalize else (0.0, 0.0, 0.0),
        "std": tuple(config.get("image_std", CLIP_STD)) if normalize else (1.0, 1.0, 1.0),
        "interpolation": INTERPOLATIONS[resample],
    }


def _is_single(clips) -> bool:
    return hasattr(clips, "timestamps") or getattr(clips, "ndim", None) == 4


def _frames(clip) -> np.ndarray:
    """The (T, H, W, 3) uint8 frames of a SampledFrames or an array."""
    frames = clip.frames if hasattr(clip, "timestamps") else clip
    if getattr(frames, "ndim", None) != 4 or frames.shape[-1] != 3 or str(frames.dtype) != "uint8":
        raise StanchatError(f"expected (T, H, W, 3) uint8 RGB frames, got {getattr(frames, 'shape', type(frames))}")
    return frames


def _random_box(height: int, width: int, scale, ratio, generator) -> tuple[int, int, int, int]:
    """(top, left, box_height, box_width) of a random resized crop, as torchvision's RandomResizedCrop."""
    import torch

    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(RANDOM_CROP_TRIES):
        u = torch.rand(4, generator=generator).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        box_w, box_h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < box_w <= width and 0 < box_h <= height:
            return int(u[2] * (height - box_h + 1)), int(u[3] * (width - box_w + 1)), box_h, box_w
    side = min(height, width)  # no box fitted: the centre square
    left, top = center_crop_box(width, height, side, side)
    return top, left, side, side
