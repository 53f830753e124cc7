"""stanchat: zero-shot video chat with a Mug-STAN temporal branch grafted onto LLaVA.

Importing this package is cheap: torch, transformers and friends load only when one of the
names below is first used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use)
_LAZY = {
    "STANConfig": "stanchat.stan",
    "STAN": "stanchat.stan",
    "mug_similarity": "stanchat.mug",
    "mean_similarity": "stanchat.mug",
    "VideoCLIP": "stanchat.videoclip",
    "VideoCLIPConfig": "stanchat.videoclip",
    "CoCaVideoCLIP": "stanchat.cocaclip",
    "CoCaVideoCLIPConfig": "stanchat.cocaclip",
    "load_video_model": "stanchat.architectures",
    "video_model_from_open_clip": "stanchat.convert.openclip_models",
    "load": "stanchat.chat",
    "load_video": "stanchat.video",
    "SampledFrames": "stanchat.video",
    "VideoClip": "stanchat.video",  # SampledFrames' old name
    "VideoOptions": "stanchat.options",
    "Preprocessor": "stanchat.video",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'stanchat' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
