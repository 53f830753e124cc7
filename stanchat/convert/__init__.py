"""Weight translation into stanchat's layout, all in one place, one converter per module.

- `released`: the authors' released Mug-STAN checkpoint (mmaction names) <-> VideoCLIP.
- `openclip`: open_clip CLIP models <-> HF CLIPModel (names, packed attention, layer indices), and
  one open_clip block's weights in HF layout (STAN init from resblocks).
- `openclip_models`: an open_clip model name -> a VideoCLIP or CoCaVideoCLIP with a fresh STAN.
- `llava_v1`: an original-layout LLaVA v1 (`LlavaLlamaForCausalLM`, one linear `mm_projector`) ->
  transformers' `LlavaForConditionalGeneration` with its processor and chat template.

Each asserts key counts and every shape before copying, and fails with one line naming the keys.
Converters import the models they build; no model module imports a converter.
This package face imports nothing: a name below loads only the converter module that defines it
(`from stanchat.convert import convert_official` never imports open_clip or the LLaVA converter).
"""

from __future__ import annotations

import importlib

_MODULES = {
    "openclip": ("clip_config_from_open_clip", "clip_from_open_clip", "encoder_layer_state_from_open_clip",
                 "is_coca_config", "load_open_clip", "open_clip_block_to_hidden_state", "open_clip_model_config",
                 "open_clip_state_dict"),
    "openclip_models": ("cocaclip_from_coca", "cocaclip_from_open_clip", "video_model_from_open_clip",
                        "videoclip_from_open_clip"),
    "released": ("convert_official", "from_released_state_dict", "load_checkpoint", "load_official",
                 "normalise_keys", "released_name", "stan_config_from_released", "to_released_state_dict", "unwrap"),
    "llava_v1": ("convert_llava_v1", "original_tower"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'stanchat.convert' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"stanchat.convert.{_WHERE[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value
