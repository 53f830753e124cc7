"""The video-text model: a HF CLIP text tower + vision tower with the STAN branch beside it.

Per-frame video features follow DESIGN.md: `post_layernorm(CLIP last CLS + STAN CLS)` then the
visual projection, (B, T, P); a graft-ready STAN, ending before the last layer, is read as
`encode_video` says. They are scored against text by mean pooling or by Mug.
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

from stanchat.errors import WeightsError
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
    `from_pretrained`, `save_pretrained` and `similarity` come from `VideoTextModel`.
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
        paired = model.clip.vision_model.encoder.layers[model.end - config.stan.depth + 1 : model.end + 1]
        model.stan.init_from_clip(paired)
        return model.to(next(clip.parameters()).dtype)

    @classmethod
    def from_clip_pretrained(cls, clip_name_or_path: str, stan: STANConfig | None = None) -> "VideoCLIP":
        """A fresh STAN branch on HF CLIP weights, e.g. `openai/clip-vit-large-patch14`."""
        clip = CLIPModel.from_pretrained(resolve_model_dir(clip_name_or_path, "CLIP model"))
        return cls.from_clip(clip, stan, source=str(clip_name_or_path))

    @classmethod
    def from_open_clip(cls, model_name: str, pretrained: str | None = None,
                       stan: STANConfig | None = None) -> "VideoCLIP":
        """A fresh STAN branch on open_clip CLIP weights (e.g. `ViT-L-14`, `laion2b_s32b_b82k`), translated
        into HF CLIP layout by `stanchat.convert.clip_from_open_clip`. CoCa models are refused before any
        download (they are `CoCaVideoCLIP`s; `stanchat.videomodel.video_model_from_open_clip` picks)."""
        from stanchat.convert.openclip import (COCA_REASON, clip_from_open_clip, is_coca_config, load_open_clip,
                                               open_clip_model_config)

        if is_coca_config(open_clip_model_config(model_name)):
            raise WeightsError(f"open_clip model {model_name} {COCA_REASON}")
        clip = clip_from_open_clip(load_open_clip(model_name, pretrained))
        return cls.from_clip(clip, stan, source=f"open_clip:{model_name}" + (f":{pretrained}" if pretrained else ""))

    def encode_video(self, pixel_values: torch.Tensor, with_stan: bool = True, views: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """Per-frame video features. pixel_values (B, T, 3, H, W) -> (B, T, P), unnormalised.
        `with_stan=False` skips the branch: CLIP's own image feature of each frame (the baseline).
        `views` (V, T'): each clip as V videos of frames `views[v]` -> (V*B, T', P), view by view
        (`run_video_tower`; e.g. forwards and backwards with one tower pass).

        A STAN ending at CLIP's last layer joins at its CLS: `post_layernorm(CLIP CLS + STAN CLS)`
        (DESIGN.md, the released weights). A graft-ready STAN ends earlier, at the layer LLaVA reads;
        it is read the way the graft reads it: each frame's fused tokens (`fuse_frames`, whose mean
        over frames is exactly what the graft hands the LLM) run through CLIP's remaining layers, so
        contrastive training shapes the very tokens the LLM will see, and in CLIP's own terms."""
        return self.encode_video_and_tokens(pixel_values, with_stan, views)[0]

    def encode_video_and_tokens(self, pixel_values: torch.Tensor, with_stan: bool = True,
                                views: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode_video`'s features and, from the same tower pass, the graft's video tokens: each
        clip's fused end-layer tokens (`fuse_frames`; CLIP's alone without the branch) averaged over
        frames, (B, 1+L, D) ((V*B, 1+L, D) with views): what `Graft.vision_tokens` hands the projector."""
        vision = self.clip.vision_model
        b, t = pixel_values.shape[:2] if views is None else (pixel_values.shape[0] * views.shape[0], views.shape[1])
        hidden, branch = run_video_tower(vision, self.stan if with_stan else None, pixel_values, self.end, views)
        fused = hidden.reshape(b, t, *hidden.shape[1:]) if branch is None else fuse_frames(hidden, branch, t)
        tokens = fused.mean(dim=1)  # (B, T, 1+L, D) -> (B, 1+L, D)
        if branch is not None and self.end < len(vision.encoder.layers) - 1:
            hidden, branch = fused.flatten(0, 1), None  # (B*T, 1+L, D)
        for layer in vision.encoder.layers[self.end + 1 :]:
            hidden = layer(hidden, None)
        cls = hidden[:, 0].reshape(b, t, -1)  # (B*T, D) -> (B, T, D)
        if branch is not None:
            cls = cls + branch[:, None, 0]  # + STAN CLS (B, 1, D)
        return self.clip.visual_projection(vision.post_layernorm(cls)), tokens

    def still_gap(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """How far the graft's tokens of a clip that does not move are from the tower's tokens of its
        one image: each clip's first frame is held for all T frames and the per-frame fused tokens
        are compared with CLIP's end-layer tokens of that frame (mean squared error over the mean
        squared token, so the scale of the tower does not matter). Trained towards 0 (`still_weight`
        in training), it keeps a graft's tokens in the image distribution the LLM's projector was
        taught on, so a video differs from an image only by what moves. pixel_values (B, T, 3, H, W) -> ()."""
        t = pixel_values.shape[1]
        first = pixel_values[:, :1]  # (B, 1, 3, H, W), held for T frames; the tower runs on it once
        held = torch.zeros(1, t, dtype=torch.long, device=first.device)  # one view: frame 0, T times
        hidden, branch = run_video_tower(self.clip.vision_model, self.stan, first, self.end, held)
        target = hidden.reshape(-1, t, *hidden.shape[1:])[:, :1].detach()  # (B, 1, 1+L, D): one frame
        fused = fuse_frames(hidden, branch, t)  # (B, T, 1+L, D)
        return (fused - target).square().mean() / target.square().mean()

    def motion_still_gap(self, tokens: torch.Tensor, stills: torch.Tensor) -> torch.Tensor:
        """How far the graft's tokens of clips are from the tower's end-layer tokens of still images
        that show the same motions (a synthetic clip's trail still), in `still_gap`'s relative units.
        Trained towards 0 (`motion_still_weight` in training), it teaches the branch to write a
        motion the way the image model already reads it in a picture. tokens (B, 1+L, D) from
        `encode_video_and_tokens`, stills (B, 3, H, W) -> ()."""
        hidden, _ = run_video_tower(self.clip.vision_model, None, stills[:, None], self.end)  # (B, 1+L, D)
        target = hidden.detach()
        return (tokens - target).square().mean() / target.square().mean()

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

