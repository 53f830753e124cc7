"""The video-text model: a HF CLIP text tower + vision tower with the STAN branch beside it.

Per-frame video features follow DESIGN.md: `post_layernorm(CLIP last CLS + STAN CLS)` then the
visual projection, (B, T, P); a graft-ready STAN, ending before the last layer, is read as
`encode_video_and_tokens` says (the one fusion rule). They are scored against text by mean
pooling or by Mug. The training recipe's extra losses live in `training.losses`.
A saved model is a directory with `config.json` (this model's config, the CLIP config inside it)
and `model.safetensors`; saving, loading and scoring live in `stanchat.videomodel`, shared with
`stanchat.cocaclip.CoCaVideoCLIP` (open_clip CoCa towers).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from transformers import CLIPConfig, CLIPModel

from stanchat.hub import resolve_model_dir
from stanchat.stan import STAN, STANConfig, fuse_frames, run_video_tower
from stanchat.videomodel import (  # noqa: F401  (re-exported: older callers import these from here)
    CONFIG_NAME,
    SCORING_MODES,
    WEIGHTS_NAME,
    SavedConfig,
    VideoTextModel,
    load_state_dict_strict,
)

logger = logging.getLogger(__name__)

ARCHITECTURE = "stanchat.VideoCLIP"


@dataclass
class VideoCLIPConfig(SavedConfig):
    architecture: ClassVar[str] = ARCHITECTURE
    clip: dict  # CLIPConfig.to_dict() of the backbone, HF layout
    stan: STANConfig = field(default_factory=STANConfig)  # the branch; end_layer -1 for retrieval
    logit_scale: float = 100.0  # tau: fixed CLIP logit scale used by training and by Mug
    source: str = ""  # where the backbone weights came from (hub id, directory or open_clip tag)


class VideoCLIP(VideoTextModel):
    """CLIP + STAN for video-text retrieval and recognition.

    Attributes: `clip` (HF `CLIPModel`), `stan` (`STAN`), `end` (last paired CLIP layer).
    `from_pretrained`, `save_pretrained` and `similarity` come from `VideoTextModel`. A fresh one on
    open_clip CLIP weights comes from `stanchat.convert.videoclip_from_open_clip` (converters import
    models, never the reverse).
    """

    config_class = VideoCLIPConfig

    def __init__(self, config: VideoCLIPConfig):
        super().__init__()
        self.config = config
        self.clip = CLIPModel(CLIPConfig.from_dict(config.clip))
        vision_config = self.clip.config.vision_config
        self.end = config.stan.resolve_end(vision_config.num_hidden_layers)
        self.stan = STAN(config.stan, vision_config)

    @classmethod
    def from_clip(cls, clip: CLIPModel, stan: STANConfig | None = None, source: str = "") -> "VideoCLIP":
        """A fresh STAN branch on a CLIP model's weights (spatial blocks copied from their pairs)."""
        # the JSON form (only values that differ from defaults) is what save_pretrained writes
        clip_config = json.loads(clip.config.to_json_string())
        config = VideoCLIPConfig(clip=clip_config, stan=stan or STANConfig(), source=source)
        model = cls(config)
        model.clip.load_state_dict(clip.state_dict())
        layers = model.clip.vision_model.encoder.layers
        model.stan.init_from_clip([layers[i] for i in config.stan.paired_layers(len(layers))])
        return model.to(next(clip.parameters()).dtype)

    @classmethod
    def from_clip_pretrained(cls, clip_name_or_path: str, stan: STANConfig | None = None) -> "VideoCLIP":
        """A fresh STAN branch on HF CLIP weights, e.g. `openai/clip-vit-large-patch14`."""
        clip = CLIPModel.from_pretrained(resolve_model_dir(clip_name_or_path, "CLIP model"))
        return cls.from_clip(clip, stan, source=str(clip_name_or_path))

    def encode_video(self, pixel_values: torch.Tensor, with_stan: bool = True, views: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """Per-frame video features. pixel_values (B, T, 3, H, W) -> (B, T, P), unnormalised.
        `with_stan=False` skips the branch: CLIP's own image feature of each frame (the baseline).
        `views` (V, T'): each clip as V videos of frames `views[v]` -> (V*B, T', P), view by view
        (`run_video_tower`; e.g. forwards and backwards with one tower pass). The fusion rule is
        `encode_video_and_tokens`'."""
        return self.encode_video_and_tokens(pixel_values, with_stan, views)[0]

    def encode_video_and_tokens(self, pixel_values: torch.Tensor, with_stan: bool = True,
                                views: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode_video`'s features and, from the same tower pass, the graft's video tokens: each
        clip's fused end-layer tokens (`fuse_frames`; CLIP's alone without the branch) averaged over
        frames, (B, 1+L, D) ((V*B, 1+L, D) with views): what `Graft.vision_tokens` hands the projector.

        The fusion rule. CLIP runs every frame up to the STAN's end layer, the branch beside it; then
        frame t's feature is `visual_projection(post_layernorm(cls_t))` where cls_t is
          - without the branch: CLIP's own CLS of frame t after the remaining layers;
          - a STAN ending at CLIP's last layer: CLIP CLS_t + STAN CLS (DESIGN.md, the released weights);
          - a graft-ready STAN, ending earlier (at the layer LLaVA reads): the CLS of frame t's fused
            tokens (`fuse_frames`, whose mean over frames is exactly what the graft hands the LLM)
            after CLIP's remaining layers, so contrastive training shapes the very tokens the LLM
            will see, and in CLIP's own terms."""
        vision = self.clip.vision_model
        b, t = pixel_values.shape[:2] if views is None else (pixel_values.shape[0] * views.shape[0], views.shape[1])
        hidden, branch = run_video_tower(vision, self.stan if with_stan else None, pixel_values, self.end, views)
        if branch is None:
            frames = hidden.reshape(b, t, *hidden.shape[1:])  # (B*T, 1+L, D) -> (B, T, 1+L, D)
            cls = self._after_end(hidden)[:, 0]  # (B*T, D)
        elif self.end == len(vision.encoder.layers) - 1:
            frames = fuse_frames(hidden, branch, t)  # (B, T, 1+L, D)
            cls = hidden[:, 0].reshape(b, t, -1) + branch[:, None, 0]  # (B, T, D) + STAN CLS (B, 1, D)
        else:
            frames = fuse_frames(hidden, branch, t)  # (B, T, 1+L, D)
            cls = self._after_end(frames.flatten(0, 1))[:, 0]  # (B*T, D)
        features = self.clip.visual_projection(vision.post_layernorm(cls.reshape(b, t, -1)))  # (B, T, P)
        return features, frames.mean(dim=1)  # tokens: (B, T, 1+L, D) -> (B, 1+L, D)

    def _after_end(self, hidden: torch.Tensor) -> torch.Tensor:
        """CLIP's layers after the STAN's end layer, on (N, 1+L, D)."""
        for layer in self.clip.vision_model.encoder.layers[self.end + 1 :]:
            hidden = layer(hidden, None)
        return hidden

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token features (B, N, P) for Mug and the pooled (EOS) feature (B, P), unnormalised."""
        if input_ids.dim() != 2:
            raise ValueError(f"expected input_ids of shape (B, N), got {tuple(input_ids.shape)}")
        out = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.clip.text_projection(out.last_hidden_state), self.clip.text_projection(out.pooler_output)

    @property
    def image_size(self) -> int:
        return self.clip.config.vision_config.image_size

    @property
    def text_length(self) -> int:
        return self.clip.config.text_config.max_position_embeddings

    def freeze_clip(self) -> None:
        """Freeze every CLIP weight; only the STAN branch trains (the graft-ready setting)."""
        self.clip.requires_grad_(False)

    def freeze_text(self) -> None:
        self.clip.text_model.requires_grad_(False)
        self.clip.text_projection.requires_grad_(False)

    def freeze_logit_scale(self) -> None:
        self.clip.logit_scale.requires_grad_(False)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute activations in the backward pass, for CLIP layers and STAN blocks alike."""
        self.stan.gradient_checkpointing = enabled
        if enabled:
            self.clip.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.clip.activation_checkpointing_disable()

