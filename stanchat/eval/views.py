"""From a video file to the model's input views, and from views to cached features.

Sampling: `clips` temporal views of T frames each come from one uniform sampling of T * clips
frames: view c takes frames c, c + clips, c + 2 clips, ... so each view spans the whole video,
shifted by (c + 0.5) / clips of a segment (TSN-style multi-clip testing; clips = 1 is the usual
segment-middle sampling). Reversal (`reverse=True`) flips the frame order of every view; since
segment middles are symmetric in time, that is exactly the reversed video sampled the same way.

Pixels: the model's image processor (saved beside the model as preprocessor_config.json, else
CLIP's: bicubic resize of the shorter side to the tower's image size, CLIP mean/std) resizes and
normalises every frame; `crops` spatial views are then cut along the longer side: the centre
(crops = 1, identical to the processor's own centre crop) or both ends and the centre (crops = 3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stanchat.errors import StanchatError
from stanchat.eval.features import Clip, VideoFeatures, cached_video_features

logger = logging.getLogger(__name__)

CROPS = (1, 3)


def image_processor(evm):
    """The image processor saved beside the model, else CLIP's defaults at the tower's image size."""
    from transformers import CLIPImageProcessor

    if (evm.directory / "preprocessor_config.json").is_file():
        return CLIPImageProcessor.from_pretrained(evm.directory)
    size = evm.model.clip.config.vision_config.image_size
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


@dataclass(frozen=True)
class ViewLoader:
    """Clip -> pixel values (clips * crops, T, 3, S, S): decode, sample, resize, normalise, crop."""

    processor: object  # a transformers image processor (CLIPImageProcessor)
    frames: int  # T per view
    clips: int = 1  # temporal views
    crops: int = 1  # spatial views per temporal view, 1 or 3
    reverse: bool = False  # play every view backwards

    def __call__(self, clip: Clip) -> "torch.Tensor":
        import torch

        from stanchat.video import load_video

        video = load_video(clip.path, frames=self.frames * self.clips, start=clip.start, end=clip.end)
        pixels = self.processor(images=list(video.frames), do_center_crop=False,
                                return_tensors="pt")["pixel_values"]  # (T*C, 3, h, w), short side resized
        # frame k*C + c belongs to view c: (T*C, ...) -> (T, C, ...) -> (C, T, ...)
        pixels = pixels.reshape(self.frames, self.clips, *pixels.shape[1:]).transpose(0, 1)
        if self.reverse:
            pixels = pixels.flip(1)
        crop = self.processor.crop_size
        views = [self._crop(pixels, crop["height"], crop["width"], k) for k in range(self.crops)]
        return torch.stack(views, dim=1).flatten(0, 1)  # (C, K, T, 3, S, S) -> (C*K, T, 3, S, S)

    def _crop(self, pixels: "torch.Tensor", height: int, width: int, k: int) -> "torch.Tensor":
        """Crop k of self.crops from (C, T, 3, h, w): centre on the short side; along the long side
        the centre (crops 1) or start, centre, end (crops 3)."""
        h, w = pixels.shape[-2:]
        if height > h or width > w:
            raise StanchatError(f"frames resized to {h}x{w} are smaller than the {height}x{width} crop; "
                                f"check the model's preprocessor_config.json")
        top, left = (h - height) // 2, (w - width) // 2
        if self.crops == 3:
            ends = (0, None, -1)[k]  # start, centre, end of the long side
            if ends is not None and w - width >= h - height:
                left = 0 if ends == 0 else w - width
            elif ends is not None:
                top = 0 if ends == 0 else h - height
        return pixels[..., top:top + height, left:left + width]

    def describe(self) -> dict:
        p = self.processor
        return {"frames": self.frames, "clips": self.clips, "crops": self.crops, "reverse": self.reverse,
                "sampling": "uniform segment middles", "size": dict(p.size), "crop_size": dict(p.crop_size),
                "image_mean": list(p.image_mean), "image_std": list(p.image_std), "resample": int(p.resample)}


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
    loader = ViewLoader(image_processor(evm), frames, clips, crops, reverse)
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
