"""Which frames a question attends to: Mug's text-to-frame weights from the VideoCLIP's text tower.

The VideoCLIP whose STAN branch is grafted onto LLaVA also has CLIP's text tower. Scoring the
question's tokens against the video's per-frame features with Mug's text-guided attention
(paper Eq. 11-13, `stanchat.mug.text_to_frame_weights`) gives one weight per frame: the frames
the question is about (paper Fig. 10). The video side is the VideoCLIP's own retrieval path
(`VideoCLIP.encode_video`, its tower at its own image size), not the graft's LLaVA tower.

Needs the text tower's tokenizer saved beside the STAN weights (`stanchat convert` copies it from
the CLIP directory); without one, `FrameRelevance.from_directory` returns None and callers hide
the feature.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from stanchat.mug import text_to_frame_weights
from stanchat.errors import StanchatError
from stanchat.options import check_frames, check_question
from stanchat.selection import SCORER, SCORERS
from stanchat.video import Preprocessor, SampledFrames
from stanchat.videoclip import VideoCLIP
from stanchat.videomodel import has_text_tokenizer, load_text_tokenizer

logger = logging.getLogger(__name__)

PROCESSOR_FILE = "preprocessor_config.json"  # the CLIP image processor, when saved beside the weights


class FrameRelevance:
    """Mug text-to-frame weights for a VideoCLIP and its text tokenizer.

    `frame_features(clip)` encodes a video's frames once ((T, P)); `weights(question, features)`
    scores a question against them ((T,), summing to 1). `preprocessor` prepares frames at the
    tower's own image size.
    """

    def __init__(self, videoclip: VideoCLIP, tokenizer: Any, preprocessor: Preprocessor | None = None):
        self.videoclip = videoclip
        self.tokenizer = tokenizer
        size = videoclip.image_size
        self.preprocessor = preprocessor or Preprocessor(size=size, crop_size=size)

    @classmethod
    def from_directory(cls, videoclip: VideoCLIP, directory: str | os.PathLike) -> "FrameRelevance | None":
        """With the tokenizer (and image-processor config, if any) saved in `directory`, else None."""
        directory = Path(directory)
        if not has_text_tokenizer(directory):
            logger.info("no text tokenizer in %s: text-to-frame weights are off", directory)
            return None
        tokenizer = load_text_tokenizer(directory)
        size = videoclip.image_size
        processor_file = directory / PROCESSOR_FILE
        preprocessor = (Preprocessor.from_processor_config(processor_file, size=size, crop_size=size)
                        if processor_file.is_file() else None)
        return cls(videoclip, tokenizer, preprocessor)

    @property
    def device(self) -> torch.device:
        return self.videoclip.clip.visual_projection.weight.device

    @torch.no_grad()
    def frame_features(self, clip: SampledFrames) -> torch.Tensor:
        """Per-frame features of a decoded video: (T, H, W, 3) uint8 -> (T, P) on the model's device."""
        check_frames(clip.frames.shape[0], self.videoclip.config.stan.max_frames)
        dtype = self.videoclip.clip.visual_projection.weight.dtype
        pixels = self.preprocessor(clip).to(self.device, dtype)  # (1, T, 3, S, S)
        return self.videoclip.encode_video(pixels)[0]  # (1, T, P) -> (T, P)

    @torch.no_grad()
    def candidate_features(self, clip: SampledFrames, scorer: str = SCORER) -> torch.Tensor:
        """Per-frame features of any number of candidate frames, (C, H, W, 3) uint8 -> (C, P):
        scorer "window" runs the VideoCLIP (CLIP + STAN) on consecutive chunks of at most STAN's
        max_frames; "tower" runs CLIP alone on every frame (no STAN). Chunked either way, so memory
        holds one chunk's activations."""
        if scorer not in SCORERS:
            raise StanchatError(f"unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}")
        chunk = self.videoclip.config.stan.max_frames
        dtype = self.videoclip.clip.visual_projection.weight.dtype
        out = []
        for start in range(0, clip.frames.shape[0], chunk):
            pixels = self.preprocessor(clip.frames[start:start + chunk]).to(self.device, dtype)  # (1, c, 3, S, S)
            if scorer == "window":
                out.append(self.videoclip.encode_video(pixels)[0])  # (1, c, P) -> (c, P)
            else:
                vision = self.videoclip.clip.vision_model(pixel_values=pixels[0]).pooler_output  # (c, D): post-LN CLS
                out.append(self.videoclip.clip.visual_projection(vision))  # (c, P)
        return torch.cat(out)  # (C, P)

    @torch.no_grad()
    def weights(self, question: str, frame_features: torch.Tensor) -> torch.Tensor:
        """The question's weight on each frame, (T,) float32 on the CPU, summing to 1 (Eq. 13).

        The text tower reads only the words its tokenizer knows: unknown-word tokens are dropped
        before the tower, not masked after it. An unknown token says nothing about a frame, yet inside
        the tower it changes every other token's features; the tiny preset's word-level vocabulary
        knows "the cyan triangle" but not "which way does ... move", and reading the question with its
        five unknown tokens (then masked) put the chosen window on an event that answers it in 77.6%
        of the 4-event dev questions, dropping them first 95.8% (`stanchat.selection`). A tokenizer
        with no unknown token (CLIP's byte-level BPE) is unchanged. Every token left attends, start
        and end included: their contextual features carry the phrase's meaning (masking them, as main
        did, gave 82.3% on those questions)."""
        positions = self.videoclip.text_length
        batch = self.tokenizer(check_question(question), truncation=True, max_length=positions, return_tensors="pt")
        ids = batch["input_ids"][0][batch["attention_mask"][0].bool()]  # (N,)
        unknown = getattr(self.tokenizer, "unk_token_id", None)
        ids = (ids[ids != unknown] if unknown is not None else ids)[None].to(self.device)  # (1, N') known tokens
        mask = torch.ones_like(ids)
        tokens, _ = self.videoclip.encode_text(ids, mask)  # (1, N', P)
        return text_to_frame_weights(tokens[0], mask[0], frame_features, tau=self.videoclip.config.logit_scale).cpu()

    def __call__(self, clip: SampledFrames, question: str) -> list[float]:
        """One question against one decoded video: a weight per frame, in frame order."""
        return self.weights(question, self.frame_features(clip)).tolist()
