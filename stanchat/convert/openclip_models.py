"""An open_clip model name -> a stanchat video-text model with a fresh STAN branch.

CLIP configs become a `VideoCLIP` (weights translated into HF CLIP by `stanchat.convert.openclip`),
CoCa configs a `CoCaVideoCLIP` (open_clip's own towers, captioning decoder left out);
`video_model_from_open_clip` picks by open_clip's own rule for building a CoCa, as `stanchat convert
open-clip` does. Either way the spatial blocks of the new STAN start as their paired blocks. This
converter imports the models; the models import no converter.
"""

from __future__ import annotations

from torch import nn

from stanchat.cocaclip import CoCaVideoCLIP, CoCaVideoCLIPConfig
from stanchat.convert.openclip import (
    COCA_REASON,
    clip_from_open_clip,
    encoder_layer_state_from_open_clip,
    is_coca_config,
    load_open_clip,
    open_clip_model_config,
)
from stanchat.errors import WeightsError
from stanchat.openclip_tokenizer import SOURCE_PREFIX
from stanchat.stan import STANConfig
from stanchat.videoclip import VideoCLIP
from stanchat.videomodel import VideoTextModel, load_state_dict_strict


def _source(model_name: str, pretrained: str | None) -> str:
    """The `config.source` of a model built from open_clip (`stanchat.openclip_tokenizer` reads it back)."""
    return f"{SOURCE_PREFIX}{model_name}" + (f":{pretrained}" if pretrained else "")


def videoclip_from_open_clip(model_name: str, pretrained: str | None = None,
                             stan: STANConfig | None = None) -> VideoCLIP:
    """A fresh STAN branch on open_clip CLIP weights (e.g. `ViT-L-14`, `laion2b_s32b_b82k`; no
    `pretrained`: random weights), translated into HF CLIP layout by `clip_from_open_clip`. CoCa
    models are refused before any download (they are `CoCaVideoCLIP`s)."""
    if is_coca_config(open_clip_model_config(model_name)):
        raise WeightsError(f"open_clip model {model_name} {COCA_REASON}")
    clip = clip_from_open_clip(load_open_clip(model_name, pretrained))
    return VideoCLIP.from_clip(clip, stan, source=_source(model_name, pretrained))


def cocaclip_from_coca(coca: nn.Module, open_clip_config: dict, stan: STANConfig | None = None,
                       source: str = "") -> CoCaVideoCLIP:
    """A fresh STAN branch on an open_clip CoCa's weights (its text decoder's are left out);
    `open_clip_config` is the dict `open_clip.CoCa(**...)` builds it from. Spatial blocks start
    as their paired resblocks."""
    config = CoCaVideoCLIPConfig(open_clip=open_clip_config, stan=stan or STANConfig(), source=source)
    model = CoCaVideoCLIP(config)
    state = {k: v for k, v in coca.state_dict().items() if not k.startswith("text_decoder.")}
    load_state_dict_strict(model.coca, state, f"open_clip CoCa {source}".strip())
    blocks = model.coca.visual.transformer.resblocks
    paired = config.stan.paired_layers(len(blocks))
    model.stan.init_from_layer_states([encoder_layer_state_from_open_clip(blocks[i]) for i in paired])
    return model.to(next(coca.parameters()).dtype)


def cocaclip_from_open_clip(model_name: str, pretrained: str | None = None,
                            stan: STANConfig | None = None) -> CoCaVideoCLIP:
    """A fresh STAN branch on an open_clip CoCa (e.g. `coca_ViT-L-14`, `laion2b_s13b_b90k`; no
    `pretrained`: random weights). Unsupported configs are refused before any download."""
    from open_clip.transformer import QuickGELU  # open_clip is an optional extra: imported when used

    cfg = open_clip_model_config(model_name)
    if not is_coca_config(cfg):
        raise WeightsError(f"open_clip model {model_name} is not a CoCa; convert it with "
                           f"stanchat.convert.videoclip_from_open_clip")
    if "hf_model_name" in cfg["text_cfg"] or "timm_model_name" in cfg["vision_cfg"]:
        raise WeightsError(f"open_clip model {model_name} has a Hugging Face text or timm image tower; "
                           f"CoCaVideoCLIP runs open_clip's own ViT and text transformer")
    coca = load_open_clip(model_name, pretrained)
    # the config CoCa(**...) takes: open_clip's factory key dropped, the activation it actually built recorded
    quick_gelu = isinstance(coca.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    config = {k: v for k, v in cfg.items() if k != "custom_text"} | {"quick_gelu": quick_gelu}
    return cocaclip_from_coca(coca, config, stan, _source(model_name, pretrained))


def video_model_from_open_clip(model_name: str, pretrained: str | None = None,
                               stan: STANConfig | None = None) -> VideoTextModel:
    """A fresh STAN branch on an open_clip model: CoCa configs build a CoCaVideoCLIP, CLIP configs a
    VideoCLIP (weights translated into HF CLIP). Unknown names list the valid ones."""
    if is_coca_config(open_clip_model_config(model_name)):
        return cocaclip_from_open_clip(model_name, pretrained, stan)
    return videoclip_from_open_clip(model_name, pretrained, stan)
