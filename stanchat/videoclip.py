"""The video-text model: a HF CLIP text tower + vision tower with the STAN branch beside it.

Per-frame video features follow DESIGN.md: `post_layernorm(CLIP last CLS + STAN CLS)` then the
visual projection, (B, T, P). They are scored against text by mean pooling or by Mug.
A saved model is a directory with `config.json` (this model's config, the CLIP config inside it)
and `model.safetensors`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPConfig, CLIPModel

from stanchat.errors import WeightsError
from stanchat.hub import resolve_model_dir
from stanchat.stan import STAN, STANConfig, run_video_tower

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ARCHITECTURE = "stanchat.VideoCLIP"
SCORING_MODES = ("mean", "mug", "mug-simple")


@dataclass
class VideoCLIPConfig:
    clip: dict  # CLIPConfig.to_dict() of the backbone, HF layout
    stan: STANConfig = field(default_factory=STANConfig)  # the branch; end_layer -1 for retrieval
    logit_scale: float = 100.0  # tau: fixed CLIP logit scale used by training and by Mug
    source: str = ""  # where the backbone weights came from (hub id, directory or open_clip tag)

    def to_dict(self) -> dict:
        return {"architecture": ARCHITECTURE, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "VideoCLIPConfig":
        data = dict(data)
        if data.pop("architecture", None) != ARCHITECTURE:
            raise WeightsError(f"config is not a stanchat VideoCLIP config (expected architecture {ARCHITECTURE!r})")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise WeightsError(f"unknown VideoCLIP config keys {sorted(unknown)}; is this file from a newer stanchat?")
        return cls(**{**data, "stan": STANConfig(**data.get("stan", {}))})


class VideoCLIP(nn.Module):
    """CLIP + STAN for video-text retrieval and recognition.

    Attributes: `clip` (HF `CLIPModel`), `stan` (`STAN`), `end` (last paired CLIP layer).
    """

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
        into HF CLIP layout by `stanchat.convert.clip_from_open_clip`. CoCa models are refused there."""
        from stanchat.convert import clip_from_open_clip, load_open_clip

        clip = clip_from_open_clip(load_open_clip(model_name, pretrained))
        return cls.from_clip(clip, stan, source=f"open_clip:{model_name}" + (f":{pretrained}" if pretrained else ""))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, dtype: torch.dtype | None = None) -> "VideoCLIP":
        """Load a directory written by `save_pretrained` (or a hub id holding one)."""
        directory = resolve_model_dir(name_or_path, "VideoCLIP model")
        config_file, weights_file = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not config_file.is_file() or not weights_file.is_file():
            raise WeightsError(f"{directory} has no {CONFIG_NAME} + {WEIGHTS_NAME}; write one with VideoCLIP.save_pretrained")
        model = cls(VideoCLIPConfig.from_dict(json.loads(config_file.read_text())))
        load_state_dict_strict(model, load_file(weights_file), str(weights_file))
        return model.to(dtype) if dtype is not None else model

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write `config.json` and `model.safetensors` (contiguous copies, no shared storage)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, directory / WEIGHTS_NAME, metadata={"format": "pt", "architecture": ARCHITECTURE})
        (directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        return directory

    def encode_video(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Per-frame video features. pixel_values (B, T, 3, H, W) -> (B, T, P), unnormalised."""
        vision = self.clip.vision_model
        last, branch = run_video_tower(vision, self.stan, pixel_values, self.end)
        b, t = pixel_values.shape[:2]
        clip_cls = last[:, 0].reshape(b, t, -1)  # (B*T, D) -> (B, T, D)
        frames = vision.post_layernorm(clip_cls + branch[:, None, 0])  # + STAN CLS (B, 1, D)
        return self.clip.visual_projection(frames)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token features (B, N, P) for Mug and the pooled (EOS) feature (B, P), unnormalised."""
        if input_ids.dim() != 2:
            raise ValueError(f"expected input_ids of shape (B, N), got {tuple(input_ids.shape)}")
        out = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.clip.text_projection(out.last_hidden_state), self.clip.text_projection(out.pooler_output)

    def similarity(self, text: tuple[torch.Tensor, torch.Tensor], text_mask: torch.Tensor,
                   video_frames: torch.Tensor, mode: str = "mean", chunk_size: int | None = None) -> torch.Tensor:
        """Cosine-scale similarity (Nt, Nv) between `encode_text` output and `encode_video` output.
        `mode`: "mean" (mean over frames), "mug" (paper Eq. 11-18) or "mug-simple"."""
        from stanchat.mug import mean_similarity, mug_similarity

        if mode not in SCORING_MODES:
            raise ValueError(f"unknown scoring mode {mode!r}; choose one of {', '.join(SCORING_MODES)}")
        tokens, pooled = text
        if mode == "mean":
            return mean_similarity(pooled, video_frames)
        mug_mode = "simple" if mode == "mug-simple" else "full"
        return mug_similarity(tokens, text_mask, video_frames, tau=self.config.logit_scale, mode=mug_mode,
                              chunk_size=chunk_size)

    def freeze_clip(self) -> None:
        """Freeze every CLIP weight; only the STAN branch trains (the graft-ready setting)."""
        self.clip.requires_grad_(False)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute activations in the backward pass, for CLIP layers and STAN blocks alike."""
        self.stan.gradient_checkpointing = enabled
        if enabled:
            self.clip.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.clip.activation_checkpointing_disable()


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load weights, failing with the names of missing/unexpected keys and mismatched shapes."""
    own = model.state_dict()
    bad = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in state.items() if k in own and v.shape != own[k].shape]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if bad or missing or unexpected:
        raise WeightsError(
            f"weights in {origin} do not fit the model: "
            + "; ".join(f"{name}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                        for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape", bad)) if keys)
        )
    model.load_state_dict(state, strict=True)
