"""Weight translation into stanchat's layout, all in one place.

- `released`: the authors' released Mug-STAN checkpoint (mmaction names) <-> VideoCLIP.
- `openclip`: open_clip CLIP models <-> HF CLIPModel (names, packed attention, layer indices), and
  the block-level pieces `CoCaVideoCLIP` uses (STAN init from resblocks, CoCa support checks).

Both assert key counts and every shape before copying, and fail with one line naming the keys.
"""

from stanchat.convert.openclip import (
    clip_config_from_open_clip,
    clip_from_open_clip,
    coca_unsupported,
    encoder_layer_state_from_open_clip,
    is_coca_config,
    load_open_clip,
    open_clip_block_to_hidden_state,
    open_clip_model_config,
    open_clip_state_dict,
    vision_config_from_open_clip,
)
from stanchat.convert.released import (
    convert_official,
    from_released_state_dict,
    load_checkpoint,
    load_official,
    normalise_keys,
    released_name,
    stan_config_from_released,
    to_released_state_dict,
)

__all__ = [
    "clip_config_from_open_clip", "clip_from_open_clip", "coca_unsupported", "encoder_layer_state_from_open_clip",
    "is_coca_config", "load_open_clip", "open_clip_block_to_hidden_state", "open_clip_model_config",
    "open_clip_state_dict", "vision_config_from_open_clip",
    "convert_official", "from_released_state_dict", "load_checkpoint", "load_official",
    "normalise_keys", "released_name", "stan_config_from_released", "to_released_state_dict",
]
