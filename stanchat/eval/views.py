"""From a video file to the model's input views, and from views to cached features.

Sampling: `clips` temporal views of T frames each come from one uniform sampling of T * clips
frames: view c takes frames c, c + clips, c + 2 clips, ... so each view spans the whole video,
shifted by (c + 0.5) / clips of a segment (TSN-style multi-clip testing; clips = 1 is the usual
segment-middle sampling). Reversal (`reverse=True`) flips the frame order of every view; since
segment middles are symmetric in time, that is exactly the reversed video sampled the same way.

Pixels: `stanchat.video.Preprocessor`, the one training and chat use (resize of the shorter side,
centre crop, CLIP normalisation), configured from the preprocessor_config.json saved beside the
model, else CLIP's at the tower's image size. crops = 1 is exactly that. crops = 3 first cuts three
squares of the shorter side's length at the start, centre and end of the longer side (the usual
three-crop test), then preprocesses each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stanchat.errors import StanchatError
from stanchat.eval.features import Clip, VideoFeatures, cached_video_features

logger = logging.getLogger(__name__)

CROPS = (1, 3)


def preprocessor(evm):
    """The model's Preprocessor: from its preprocessor_config.json, else CLIP's at the tower's size."""
    from stanchat.video import Preprocessor

    if (evm.directory / "preprocessor_config.json").is_file():
        return Preprocessor.from_processor_config(evm.directory)
    size = evm.model.image_size
    return Preprocessor(size=size, crop_size=size)


def square_crops(frames: "np.ndarray", crops: int) -> list:
    """(T, H, W, 3) -> `crops` views: the frames themselves (1), or three squares of side min(H, W)
    at the start, centre and end of the longer side (3)."""
    if crops == 1:
        return [frames]
    height, width = frames.shape[1:3]
    side = min(height, width)
    starts = (0, (max(height, width) - side) // 2, max(height, width) - side)
    if width >= height:
        return [frames[:, :, s:s + side] for s in starts]
    return [frames[:, s:s + side] for s in starts]


@dataclass(frozen=True)
class ViewLoader:
    """Clip -> pixel values (clips * crops, T, 3, S, S): decode, sample, crop, preprocess."""

    preprocess: object  # a stanchat.video.Preprocessor
    frames: int  # T per view
    clips: int = 1  # temporal views
    crops: int = 1  # spatial views per temporal view, 1 or 3
    reverse: bool = False  # play every view backwards

    def __call__(self, clip: Clip) -> "torch.Tensor":
        import numpy as np

        from stanchat.video import load_video

        with clip.local_file() as path:
            video = load_video(path, frames=self.frames * self.clips, start=clip.start, end=clip.end)
        frames = video.frames  # (T*C, H, W, 3) uint8; frame k*C + c belongs to temporal view c
        views = []
        for c in range(self.clips):
            sampled = frames[c::self.clips][::-1] if self.reverse else frames[c::self.clips]  # (T, H, W, 3)
            views += [np.ascontiguousarray(v) for v in square_crops(sampled, self.crops)]
        return self.preprocess(views)  # (C*K, T, 3, S, S), clip-major

    def describe(self) -> dict:
        p = self.preprocess
        return {"frames": self.frames, "clips": self.clips, "crops": self.crops, "reverse": self.reverse,
                "sampling": "uniform segment middles", "size": p.size, "crop_size": p.crop_size,
                "mean": list(p.mean), "std": list(p.std), "interpolation": p.interpolation}


def video_features(evm, cfg, annotation, frames: int, clips: int = 1, crops: int = 1,
                   reverse: bool = False) -> VideoFeatures:
    """Features (Nv, clips * crops, T, P) of the annotation's videos, through the feature cache."""
    if crops not in CROPS:
        raise StanchatError(f"--crops must be 1 or 3, got {crops}")
    if clips < 1 or frames < 1:
        raise StanchatError(f"--frames and --clips must be at least 1, got {frames} and {clips}")
    max_frames = evm.model.config.stan.max_frames
    if frames > max_frames:
        raise StanchatError(f"--frames {frames} is more than the {max_frames} frames STAN covers; use fewer")
    loader = ViewLoader(preprocessor(evm), frames, clips, crops, reverse)
    key = {"model": evm.fingerprint, "model_dir": str(evm.directory), "views": loader.describe(),
           "annotation_sha256": _sha256(annotation.ann_file)}
    return cached_video_features(lambda pixels: encode_views(evm, pixels), loader, annotation.clips,
                                 cfg.cache_dir, cfg.dataset, key, cfg.batch_size, cfg.workers)


def encode_views(evm, pixels: "torch.Tensor") -> "torch.Tensor":
    """(B, V, T, 3, H, W) -> per-frame features (B, V, T, P) with the VideoCLIP."""
    b, v = pixels.shape[:2]
    dtype = next(evm.model.parameters()).dtype
    feats = evm.model.encode_video(pixels.flatten(0, 1).to(evm.device, dtype))  # (B*V, T, P)
    return feats.reshape(b, v, *feats.shape[1:])


def _sha256(path) -> str:
    """The annotation's content hash; for an annotation folder (HMDB-51 splits), of every file in it."""
    import hashlib

    from stanchat.eval.features import file_sha256

    if path.is_file():
        return file_sha256(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    return hashlib.sha256("".join(f"{p.relative_to(path)}:{file_sha256(p)};" for p in files).encode()).hexdigest()
