"""One training or validation clip from one annotation record, through `stanchat.video`.

Training (the paper's sparse sampling): one random frame inside each of T equal segments, and one
random resized crop shared by all frames of the clip; both are drawn from the clip's seed, so the
same (run seed, epoch, index) always gives the same pixels. Validation: segment centres, resize of
the shorter side and a centre crop, as at inference.
"""

from __future__ import annotations

import torch

from stanchat.video import Preprocessor, load_video
from stanchat.video.spool import spooled


class ClipDecoder:
    """`decoder(record, seed)` -> (T, 3, size, size) float32, CLIP-normalised; `decoder.from_bytes(
    data, suffix, seed)` the same for a video held in memory; `decoder.still(record, seed)` -> the
    record's motion still, (3, size, size).

    Raises `VideoError` for a file that cannot be decoded (the dataset then moves on). Picklable,
    so DataLoader workers get their own copy.
    """

    def __init__(self, frames: int, size: int, train: bool):
        self.frames, self.size, self.train = frames, size, train
        self.preprocess = Preprocessor(size=size, crop_size=size, augment=train)

    def __call__(self, record, seed: int) -> torch.Tensor:
        return self.clip(record.video, record.start, record.end, seed)

    def from_bytes(self, data: bytes, suffix: str, seed: int) -> torch.Tensor:
        """The clip of an encoded video held in memory (a WebDataset sample), `suffix` its
        container's extension (".mp4"): decoded like a file, through a short-lived temporary copy."""
        with spooled(data, suffix) as path:
            return self.clip(path, None, None, seed)

    def clip(self, path, start: float | None, end: float | None, seed: int) -> torch.Tensor:
        """(T, 3, S, S) from the file at `path`, in [start, end) seconds (None: the whole video)."""
        clip = load_video(
            path, frames=self.frames, strategy="random" if self.train else "uniform", start=start, end=end,
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
