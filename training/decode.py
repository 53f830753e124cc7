"""One training or validation clip from one annotation record, through `stanchat.video`.

Training (the paper's sparse sampling): one random frame inside each of T equal segments, and one
random resized crop shared by all frames of the clip; both are drawn from the clip's seed, so the
same (run seed, epoch, index) always gives the same pixels. Validation: segment centres, resize of
the shorter side and a centre crop, as at inference.
"""

from __future__ import annotations

import torch

from stanchat.video import Preprocessor, load_video


class ClipDecoder:
    """`decoder(record, seed)` -> (T, 3, size, size) float32, CLIP-normalised; `decoder.still(record,
    seed)` -> the record's motion still, (3, size, size).

    Raises `VideoError` for a file that cannot be decoded (the dataset then moves on). Picklable,
    so DataLoader workers get their own copy.
    """

    def __init__(self, frames: int, size: int, train: bool):
        self.frames, self.size, self.train = frames, size, train
        self.preprocess = Preprocessor(size=size, crop_size=size, augment=train)

    def __call__(self, record, seed: int) -> torch.Tensor:
        clip = load_video(
            record.video, frames=self.frames, strategy="random" if self.train else "uniform",
            start=record.start, end=record.end,
            size=self.size,  # decode straight to the model's scale: the crop box then covers 50-100% of it
            generator=seed if self.train else None,
        )
        crop = torch.Generator().manual_seed(seed) if self.train else None
        return self.preprocess(clip, generator=crop)[0]  # (1, T, 3, S, S) -> (T, 3, S, S)

    def still(self, record, seed: int) -> torch.Tensor:
        """The record's motion still (`Record.still`), (3, size, size), cropped with the clip's crop
        box (the same seed draws the same box from frames of the same size)."""
        image = load_video(record.still, frames=1, size=self.size)
        crop = torch.Generator().manual_seed(seed) if self.train else None
        return self.preprocess(image, generator=crop)[0, 0]
