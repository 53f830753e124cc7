"""The registry of saved video-text model architectures: the `architecture` tag a model's config.json
records -> the class that loads it, and `load_video_model`, which loads any of them by that tag.

It sits above the models (`stanchat.videomodel` is their common base, below both) so the registry
holds the classes themselves: no import by string, and neither model module imports the other.
"""

from __future__ import annotations

import os

import torch

from stanchat.cocaclip import CoCaVideoCLIP
from stanchat.errors import WeightsError
from stanchat.hub import resolve_model_dir
from stanchat.videoclip import VideoCLIP
from stanchat.videomodel import CONFIG_NAME, VideoTextModel, read_config

# saved `architecture` tag -> model class; each class's config writes the tag it is registered under
ARCHITECTURES: dict[str, type[VideoTextModel]] = {
    model.config_class.architecture: model for model in (VideoCLIP, CoCaVideoCLIP)
}


def video_model_class(architecture: str, origin: str = "") -> type[VideoTextModel]:
    """The model class registered for a saved `architecture` tag; unknown tags list the known ones
    (`origin`, e.g. the config file, is named in that error)."""
    if architecture not in ARCHITECTURES:
        where = f" in {origin}" if origin else ""
        raise WeightsError(f"unknown model architecture {architecture!r}{where}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[architecture]


def load_video_model(name_or_path: str | os.PathLike, dtype: torch.dtype | None = None) -> VideoTextModel:
    """Load any saved stanchat video-text model (VideoCLIP or CoCaVideoCLIP), by the `architecture`
    its config.json records."""
    directory = resolve_model_dir(name_or_path, "stanchat video model")
    architecture = read_config(directory).get("architecture")
    return video_model_class(architecture, str(directory / CONFIG_NAME)).from_pretrained(directory, dtype)
