"""The recipe's losses beside the contrastive one: how far the graft's tokens are from the image
tokens the LLM's projector was taught on (`ContrastiveTask`'s `still_weight` and
`motion_still_weight`).

Both are relative squared distances, mean squared error over the mean squared target token, so
the scale of the tower does not matter, and both read the graft-ready VideoCLIP the way the graft
reads it: the fused end-layer tokens of `stanchat.stan.fuse_frames` against CLIP's own end-layer
tokens of an image (`run_video_tower` without the branch), the target detached.
"""

from __future__ import annotations

import torch

from stanchat.stan import fuse_frames, run_video_tower
from stanchat.videoclip import VideoCLIP


def relative_gap(tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over the target's mean square, () (target detached by the caller)."""
    return (tokens - target).square().mean() / target.square().mean()


def still_gap(model: VideoCLIP, pixel_values: torch.Tensor) -> torch.Tensor:
    """How far the graft's tokens of a clip that does not move are from the tower's tokens of its
    one image: each clip's first frame is held for all T frames and the per-frame fused tokens
    are compared with CLIP's end-layer tokens of that frame. Trained towards 0 (`still_weight`),
    it keeps a graft's tokens in the image distribution the LLM's projector was taught on, so a
    video differs from an image only by what moves. pixel_values (B, T, 3, H, W) -> ()."""
    t = pixel_values.shape[1]
    first = pixel_values[:, :1]  # (B, 1, 3, H, W), held for T frames; the tower runs on it once
    held = torch.zeros(1, t, dtype=torch.long, device=first.device)  # one view: frame 0, T times
    hidden, branch = run_video_tower(model.clip.vision_model, model.stan, first, model.end, held)
    target = hidden.reshape(-1, t, *hidden.shape[1:])[:, :1].detach()  # (B, 1, 1+L, D): one frame
    return relative_gap(fuse_frames(hidden, branch, t), target)  # fused (B, T, 1+L, D)


def motion_still_gap(model: VideoCLIP, tokens: torch.Tensor, stills: torch.Tensor) -> torch.Tensor:
    """How far the graft's tokens of clips are from the tower's end-layer tokens of still images
    that show the same motions (a synthetic clip's trail still). Trained towards 0
    (`motion_still_weight`), it teaches the branch to write a motion the way the image model
    already reads it in a picture. tokens (B, 1+L, D) from `VideoCLIP.encode_video_and_tokens`,
    stills (B, 3, H, W) -> ()."""
    hidden, _ = run_video_tower(model.clip.vision_model, None, stills[:, None], model.end)  # (B, 1+L, D)
    return relative_gap(tokens, hidden.detach())
