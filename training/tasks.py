"""The three training tasks: what a batch is turned into, the loss, and the validation metric.

- `pretrain` and `retrieval`: video-text contrastive learning, a symmetric InfoNCE over the
  (B, B) scores of the global batch (gathered across processes), scored by mean pooling or Mug.
  They differ in data and hyperparameters (configs), not in the loss. Validation: R@1 on a
  held-out split.
- `recognition` (paper Eq. 20): class names are put into a prompt, run once through the frozen
  text tower, and a clip's scores against every class embedding are the logits of a
  cross-entropy. Validation: top-1 accuracy.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from stanchat.errors import StanchatError
from stanchat.mug import contrastive_loss, gather_features
from stanchat.videoclip import VideoCLIP
from stanchat.videomodel import VideoTextModel
from training.losses import motion_still_gap, still_gap


class Encoded(NamedTuple):
    """What `VideoTextForward` returns: frames (B, T, P); tokens (B, N, P) and pooled (B, P), None
    without text; still_gap () (`training.losses.still_gap`), backwards (B, T, P), the frames of each
    clip played backwards, and motion_gap () (`training.losses.motion_still_gap` of the clips that
    have a still), None unless asked for."""

    frames: torch.Tensor
    tokens: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    still_gap: torch.Tensor | None = None
    backwards: torch.Tensor | None = None
    motion_gap: torch.Tensor | None = None


class VideoTextForward(nn.Module):
    """One `forward` for DDP / FSDP to wrap: clips and captions -> `Encoded` features.

    pixel_values (B, T, 3, H, W) -> frames (B, T, P); input_ids (B, N) -> tokens (B, N, P),
    pooled (B, P). Without input_ids only the video tower runs; `still=True` also measures the
    graft's still-video gap, `backwards=True` also encodes every clip played backwards, and
    `stills` (B, 3, H, W) with `has_still` (B,) bool give the motion-still gap of the clips that
    have one, all in the same forward so that DDP sees one graph per step.
    """

    def __init__(self, model: VideoTextModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, still: bool = False, backwards: bool = False,
                stills: torch.Tensor | None = None, has_still: torch.Tensor | None = None) -> Encoded:
        b, t = pixel_values.shape[:2]
        order = torch.arange(t, device=pixel_values.device)
        views = torch.stack([order, order.flip(0)]) if backwards else None  # (2, T): forwards, backwards
        motion = None
        if stills is not None and has_still.any():  # the graft's tokens come from the same tower pass
            frames, graft = self.model.encode_video_and_tokens(pixel_values, views=views)
            motion = motion_still_gap(self.model, graft[:b][has_still], stills[has_still])
        else:
            frames = self.model.encode_video(pixel_values, views=views)  # (B or 2B, T, P), one tower pass
        frames, reversed_frames = (frames[:b], frames[b:]) if backwards else (frames, None)
        gap = still_gap(self.model, pixel_values) if still else None
        if input_ids is None:
            return Encoded(frames, still_gap=gap, backwards=reversed_frames, motion_gap=motion)
        tokens, pooled = self.model.encode_text(input_ids, attention_mask)
        return Encoded(frames, tokens, pooled, gap, reversed_frames, motion)


class ContrastiveTask:
    """Video-text InfoNCE over the global batch (pretrain and retrieval)."""

    needs_text = True

    def __init__(self, model: VideoTextModel, scoring: str, still_weight: float = 0.0, reversed_negatives: bool = False,
                 motion_still_weight: float = 0.0):
        if (still_weight > 0 or motion_still_weight > 0) and not isinstance(model, VideoCLIP):
            raise StanchatError(f"model.still_weight and model.motion_still_weight measure the LLaVA graft's tokens, "
                                f"which only a VideoCLIP has (this is a {type(model).__name__}); set them to 0")
        self.model, self.scoring, self.still_weight = model, scoring, still_weight
        self.reversed_negatives, self.motion_still_weight = reversed_negatives, motion_still_weight

    def to(self, device: torch.device) -> "ContrastiveTask":
        """Nothing to move: the task holds no tensors."""
        return self

    def loss(self, forward: nn.Module, batch: dict) -> torch.Tensor:
        """InfoNCE, plus `still_weight` x the still-video gap of the batch's clips and
        `motion_still_weight` x the motion-still gap of those with a still, when they are set; with
        `reversed_negatives` every caption also ranks the batch's clips played backwards."""
        return self.loss_terms(forward, batch)[0]

    def loss_terms(self, forward: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """`loss` and, for the log, its terms before weighting: "contrastive", and "still_gap" /
        "motion_gap" when they are part of it."""
        stills = batch.get("stills") if self.motion_still_weight > 0 else None
        out = forward(batch["pixel_values"], batch["input_ids"], batch["attention_mask"],
                      still=self.still_weight > 0, backwards=self.reversed_negatives,
                      stills=stills, has_still=batch.get("has_still"))
        # every process scores its texts against the videos of all processes and vice versa
        frames, tokens, pooled, mask = (gather_features(x) for x in (out.frames, out.tokens, out.pooled,
                                                                      batch["attention_mask"]))
        if out.backwards is not None:
            frames = torch.cat([frames, gather_features(out.backwards)])  # (2B, T, P): the clips, then backwards
        scores = self.model.similarity((tokens, pooled), mask, frames, mode=self.scoring)  # (B, B or 2B) text x video
        loss = contrastive_loss(self.model.config.logit_scale * scores)
        terms = {"contrastive": loss.item()}
        for name, gap, weight in (("still_gap", out.still_gap, self.still_weight),
                                  ("motion_gap", out.motion_gap, self.motion_still_weight)):
            if gap is not None:
                loss, terms[name] = loss + weight * gap, gap.item()
        return loss, terms

    @torch.no_grad()
    def validate(self, forward: nn.Module, batches, device: torch.device) -> dict[str, float]:
        """R@1/5 text->video and video->text over a held-out split, each caption matched to its clip."""
        frames, tokens, pooled, masks, keys = [], [], [], [], []
        for batch in batches:
            if batch["size"] == 0:  # every clip of this batch failed to decode
                continue
            out = forward(batch["pixel_values"].to(device), batch["input_ids"].to(device),
                          batch["attention_mask"].to(device))
            frames.append(out.frames.float()), tokens.append(out.tokens.float()), pooled.append(out.pooled.float())
            masks.append(batch["attention_mask"].to(device)), keys.extend(batch["videos"])
        text = (torch.cat(tokens), torch.cat(pooled))  # captions are padded to max_tokens, so N agrees
        scores = self.model.similarity(text, torch.cat(masks), torch.cat(frames), mode=self.scoring, chunk_size=128)
        return retrieval_recall(scores, keys)


def retrieval_recall(scores: torch.Tensor, keys: list[str]) -> dict[str, float]:
    """R@1, R@5 and median rank both ways for a (N, N) caption x clip score matrix whose row i's
    caption belongs to the clip of column i. Several captions of one clip count the clip once: a
    caption's positives are the columns of its clip key, a clip's are all of its captions. Ranks and
    ties follow `stanchat.eval.metrics` (ties count against the model)."""
    import numpy as np

    from stanchat.eval.metrics import ranks_of_positives, recall_metrics

    unique = list(dict.fromkeys(keys))  # distinct clips, in first-seen order
    videos = scores[:, _first_rows(keys, unique)].cpu().numpy()  # (N captions, V clips)
    positives = np.array(keys)[:, None] == np.array(unique)[None, :]  # (N, V)
    t2v = recall_metrics(ranks_of_positives(videos, positives), ks=(1, 5))
    v2t = recall_metrics(ranks_of_positives(videos.T, positives.T), ks=(1, 5))
    return {"r1_t2v": t2v["R@1"], "r5_t2v": t2v["R@5"], "mdr_t2v": t2v["MdR"],
            "r1_v2t": v2t["R@1"], "r5_v2t": v2t["R@5"], "mdr_v2t": v2t["MdR"]}


def _first_rows(keys: list[str], unique: list[str]) -> list[int]:
    """Row of the first caption of every clip key, in one pass."""
    first: dict[str, int] = {}
    for row, key in enumerate(keys):
        first.setdefault(key, row)
    return [first[k] for k in unique]


class RecognitionTask:
    """Cross-entropy of a clip's scores against frozen class-name embeddings (paper Eq. 20)."""

    needs_text = False

    def __init__(self, model: VideoTextModel, scoring: str, class_text: dict[str, torch.Tensor]):
        """`class_text`: the tokenised prompts of every class (`input_ids`, `attention_mask`, (C, N))."""
        self.model, self.scoring = model, scoring
        self.class_ids, self.class_mask = class_text["input_ids"], class_text["attention_mask"]  # (C, N)
        self.class_features: tuple[torch.Tensor, torch.Tensor] | None = None

    def embed_classes(self) -> None:
        """Embed the class prompts once with the (frozen) text tower: tokens (C, N, P), pooled (C, P).
        Called before the model is wrapped for DDP / FSDP, where it still is in one piece."""
        with torch.no_grad():
            tokens, pooled = self.model.encode_text(self.class_ids, self.class_mask)
        self.class_features = (tokens.float(), pooled.float())

    def to(self, device: torch.device) -> "RecognitionTask":
        """Move the class embeddings and mask to the training device."""
        self.class_mask = self.class_mask.to(device)
        self.class_features = tuple(f.to(device) for f in self.class_features)
        return self

    def logits(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, T, P) -> (B, C) class logits."""
        scores = self.model.similarity(self.class_features, self.class_mask, frames, mode=self.scoring)  # (C, B)
        return self.model.config.logit_scale * scores.T

    def loss(self, forward: nn.Module, batch: dict) -> torch.Tensor:
        frames = forward(batch["pixel_values"]).frames
        return F.cross_entropy(self.logits(frames), batch["labels"])

    def loss_terms(self, forward: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """`loss`; it has no terms to log apart."""
        return self.loss(forward, batch), {}

    @torch.no_grad()
    def validate(self, forward: nn.Module, batches, device: torch.device) -> dict[str, float]:
        """Top-1, top-5 and mean class accuracy (%) over a held-out split (`stanchat.eval.metrics`)."""
        from stanchat.eval.metrics import classification_metrics, classification_ranks

        logits, labels = [], []
        for batch in batches:
            if batch["size"] == 0:
                continue
            frames = forward(batch["pixel_values"].to(device)).frames
            logits.append(self.logits(frames.float()).cpu())
            labels.append(batch["labels"])
        logits, labels = torch.cat(logits).numpy(), torch.cat(labels).numpy()
        metrics = classification_metrics(classification_ranks(logits, labels), labels, logits.shape[1])
        return {key: metrics[key] for key in ("top1", "top5", "mean_class_accuracy")}
