"""What stanchat's video-text models share: saving, loading, scoring and the text tokenizer.

Two models carry a STAN branch: `VideoCLIP` (HF CLIP towers; OpenAI/LAION CLIP weights, open_clip
CLIP weights translated into HF layout) and `CoCaVideoCLIP` (open_clip CoCa towers run natively).
Both save a directory with `config.json` (an `architecture` tag, the backbone config, the
`STANConfig`) and `model.safetensors`, encode video as (B, T, P) frame features and text as
(tokens (B, N, P), pooled (B, P)), and score them the same way (`VideoTextModel.similarity`).

This module is the models' common base, below both: the registry of architecture tags and
`load_video_model`, which need the classes, are `stanchat.architectures`, above them; building a
model from open_clip is `stanchat.convert.openclip_models` (converters import models, never the
reverse).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from stanchat.errors import WeightsError
from stanchat.hub import resolve_model_dir
from stanchat.mug import mean_similarity, mug_similarity
from stanchat.openclip_tokenizer import MARKER, OpenCLIPTokenizer, open_clip_name
from stanchat.options import SCORING_MODES
from stanchat.stan import STANConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class SavedConfig:
    """Base of the model config dataclasses: JSON with an `architecture` tag and a nested STANConfig."""

    architecture: ClassVar[str]  # the tag written to config.json; a key of stanchat.architectures.ARCHITECTURES

    def to_dict(self) -> dict:
        return {"architecture": self.architecture, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict):
        data = dict(data)
        name = cls.architecture.split(".")[-1]
        if data.pop("architecture", None) != cls.architecture:
            raise WeightsError(f"config is not a stanchat {name} config (expected architecture {cls.architecture!r})")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise WeightsError(f"unknown {name} config keys {sorted(unknown)}; is this file from a newer stanchat?")
        return cls(**{**data, "stan": STANConfig(**data.get("stan", {}))})


def read_config(directory: Path) -> dict:
    """The parsed config.json of a saved model directory; missing files or bad JSON are one line."""
    config_file, weights_file = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_file.is_file() or not weights_file.is_file():
        raise WeightsError(f"{directory} has no {CONFIG_NAME} + {WEIGHTS_NAME}; write one with save_pretrained "
                           f"or `stanchat convert`")
    try:
        data = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise WeightsError(f"{config_file} is not valid JSON ({err}); re-save the model") from err
    if not isinstance(data, dict):
        raise WeightsError(f"{config_file} holds a JSON {type(data).__name__}, not a model config; re-save the model")
    return data


class VideoTextModel(nn.Module):
    """Base of the STAN video-text models: saving, loading and scoring. Subclasses set
    `config_class` and implement `encode_video`, `encode_text`, the sizes below and the freezing
    methods; `self.config` is a SavedConfig with a `logit_scale`. Callers (eval, training, chat)
    ask the model for these, never its backbone's config."""

    config_class: ClassVar[type[SavedConfig]]

    @property
    def image_size(self) -> int:
        """The side in pixels of the square frames the vision tower was built for."""
        raise NotImplementedError

    @property
    def text_length(self) -> int:
        """The most text tokens `encode_text` takes (the text tower's positions)."""
        raise NotImplementedError

    def freeze_clip(self) -> None:
        """Freeze every backbone weight; only the STAN branch trains."""
        raise NotImplementedError

    def freeze_text(self) -> None:
        """Freeze the text tower and its projection."""
        raise NotImplementedError

    def freeze_logit_scale(self) -> None:
        """Freeze the backbone's own learned logit scale: scoring uses the fixed `config.logit_scale`,
        so it gets no gradient (and DDP refuses parameters that get none)."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, dtype: torch.dtype | None = None):
        """Load a directory written by `save_pretrained` (or a hub id holding one)."""
        directory = resolve_model_dir(name_or_path, f"{cls.__name__} model")
        model = cls(cls.config_class.from_dict(read_config(directory)))
        weights_file = directory / WEIGHTS_NAME
        load_state_dict_strict(model, load_file(weights_file), str(weights_file))
        return model.to(dtype) if dtype is not None else model

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write `config.json` and `model.safetensors` (contiguous copies, no shared storage)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, directory / WEIGHTS_NAME, metadata={"format": "pt", "architecture": self.config.architecture})
        (directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        return directory

    def similarity(self, text: tuple[torch.Tensor, torch.Tensor], text_mask: torch.Tensor,
                   video_frames: torch.Tensor, mode: str = "mean", chunk_size: int | None = None) -> torch.Tensor:
        """Cosine-scale similarity (Nt, Nv) between `encode_text` output and `encode_video` output.
        `mode`: "mean" (mean over frames), "mug" (paper Eq. 11-18) or "mug-simple"."""
        if mode not in SCORING_MODES:
            raise ValueError(f"unknown scoring mode {mode!r}; choose one of {', '.join(SCORING_MODES)}")
        tokens, pooled = text
        if mode == "mean":
            return mean_similarity(pooled, video_frames)
        mug_mode = "simple" if mode == "mug-simple" else "full"
        return mug_similarity(tokens, text_mask, video_frames, tau=self.config.logit_scale, mode=mug_mode,
                              chunk_size=chunk_size)


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


# any one marks a saved tokenizer (the last: open_clip's own, `stanchat.openclip_tokenizer`)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "open_clip_tokenizer.json")


def has_text_tokenizer(directory: str | os.PathLike) -> bool:
    """Whether a text tokenizer is saved in `directory`."""
    return any((Path(directory) / name).is_file() for name in TOKENIZER_FILES)


def load_text_tokenizer(directory: str | os.PathLike, source: str = ""):
    """The text tokenizer saved beside a video-text model, else that of the CLIP it was built
    from (`config.source`: a directory or hub id, or open_clip's own tokenizer for an open_clip
    source). One-line WeightsError naming the fix otherwise."""
    from transformers import AutoTokenizer  # transformers loads only when a tokenizer is read

    directory = Path(directory)
    if (directory / MARKER).is_file():
        return OpenCLIPTokenizer.from_directory(directory)
    if has_text_tokenizer(directory):
        return AutoTokenizer.from_pretrained(directory)
    if open_clip_name(source):
        return OpenCLIPTokenizer(open_clip_name(source))
    if source:
        return AutoTokenizer.from_pretrained(resolve_model_dir(source, "CLIP tokenizer"))
    raise WeightsError(f"{directory} has no text tokenizer ({' or '.join(TOKENIZER_FILES)}); save the CLIP's "
                       f"tokenizer there (tokenizer.save_pretrained('{directory}'))")
