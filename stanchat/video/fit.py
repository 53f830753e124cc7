"""`Fit`: how a frame becomes the vision tower's square input (resize, then the centre crop).

One picklable spec used in two places, so the two can never disagree:
- the decode worker applies it to each frame as soon as it is decoded (`load_video(..., fit=)`),
  so frames cross the pipe at the model's size and no process holds more than one full-size
  frame per decoder;
- `Preprocessor` applies it to frames that were decoded at another size (its `fit` property).
Both run the same code below: torchvision's antialiased uint8 resize (the kernel transformers'
`CLIPImageProcessor` uses) and the floor-centred crop, one frame or a batch (the kernel resizes
each picture on its own, so a frame fitted alone equals the same frame fitted in a batch).
torch and torchvision are imported on first use, in whichever process fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from stanchat.errors import StanchatError
from stanchat.video.geometry import center_crop_box, short_side_size

if TYPE_CHECKING:
    import numpy as np
    import torch

INTERPOLATIONS = {2: "bilinear", 3: "bicubic"}  # PIL resample codes used in processor configs -> torch mode


@dataclass(frozen=True)
class Fit:
    """Resize a frame (shorter side, or both sides when `squash`) and keep the centre square."""

    size: int  # shorter side after resizing, pixels (with `squash`: both sides)
    crop_size: int  # side of the centre square kept, pixels
    interpolation: str  # resize filter: "bicubic" or "bilinear"
    squash: bool  # resize the whole frame to size x size (aspect not kept, LLaVA-NeXT's base image)

    def __post_init__(self) -> None:
        if not 0 < self.crop_size <= self.size:
            raise StanchatError(f"crop_size must be between 1 and size ({self.size}), got {self.crop_size}")
        if self.interpolation not in INTERPOLATIONS.values():
            names = ", ".join(INTERPOLATIONS.values())
            raise StanchatError(f"unknown interpolation {self.interpolation!r}; choose one of: {names}")

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a width x height picture after the resize, before the crop."""
        return (self.size, self.size) if self.squash else short_side_size(width, height, self.size)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) uint8 -> (T, 3, crop, crop) uint8: resize, then the centre square."""
        height, width = x.shape[-2:]
        new_w, new_h = self.resized(width, height)
        if (new_w, new_h) != (width, height):
            x = resize(x, new_h, new_w, self.interpolation)
        left, top = center_crop_box(new_w, new_h, self.crop_size, self.crop_size)
        return x[:, :, top : top + self.crop_size, left : left + self.crop_size]

    def __call__(self, picture: np.ndarray) -> np.ndarray:
        """One decoded picture, upright: (H, W, 3) uint8 -> (crop, crop, 3) uint8, never a view into the
        full-size picture, so that can be freed at once."""
        import torch

        if not picture.flags.writeable:  # Pillow's arrays are read-only and torch.from_numpy warns on them
            picture = picture.copy()
        x = torch.from_numpy(picture[None]).permute(0, 3, 1, 2)  # (1, H, W, 3) -> (1, 3, H, W), as Preprocessor
        return self.frames(x)[0].permute(1, 2, 0).contiguous().numpy()  # (3, crop, crop) -> (crop, crop, 3)


def import_resize() -> None:
    """Load what fitting runs on (torch, torchvision's resize; a second or more the first time), e.g.
    before decoding rather than inside the first frame."""
    import torch  # noqa: F401
    import torchvision.transforms.v2.functional  # noqa: F401


def resize(x: torch.Tensor, height: int, width: int, interpolation: str) -> torch.Tensor:
    """(T, 3, h, w) uint8 -> (T, 3, height, width) uint8 with antialias: torchvision's uint8 kernel,
    the one CLIPImageProcessor uses (a float resize differs by up to ~10 grey levels on noise)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as tvF

    return tvF.resize(x, [height, width], interpolation=InterpolationMode(interpolation), antialias=True)
