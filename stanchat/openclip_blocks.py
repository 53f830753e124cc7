"""open_clip transformer blocks in HF CLIP's terms: whether they compute what a `CLIPEncoderLayer`
computes, and the HF config fields that describe them.

STAN's spatial blocks are HF `CLIPEncoderLayer`s; on an open_clip tower they pair with its
`ResidualAttentionBlock`s. Two places ask about those blocks: the model that runs open_clip towers
natively (`stanchat.cocaclip.CoCaVideoCLIP`, which sizes its STAN from them) and the converter that
turns open_clip CLIP models into HF CLIP (`stanchat.convert.openclip`). Both read this module, so the
model imports no converter; the weight names and their translation stay with the converter.
"""

from __future__ import annotations

from torch import nn
from transformers import CLIPVisionConfig

from stanchat.errors import WeightsError


def hf_activation(module: nn.Module) -> str | None:
    """HF `hidden_act` computing what an open_clip activation module computes, or None."""
    from open_clip.transformer import QuickGELU  # open_clip is an optional extra: imported when used

    if isinstance(module, QuickGELU):  # x * sigmoid(1.702 x), as HF "quick_gelu"
        return "quick_gelu"
    if isinstance(module, nn.GELU) and module.approximate == "none":  # exact erf GELU, as HF "gelu"
        return "gelu"
    return None


def unsupported_blocks(blocks: list[nn.Module]) -> str | None:
    """Why these open_clip blocks do not compute what HF `CLIPEncoderLayer`s (and STAN's spatial
    blocks) compute, or None when they do."""
    from open_clip.transformer import ResidualAttentionBlock

    if any(type(b) is not ResidualAttentionBlock or not isinstance(b.ls_1, nn.Identity) or hasattr(b, "ln_1_kv")
           for b in blocks):
        return "has custom or layer-scaled transformer blocks"
    activations = {hf_activation(b.mlp.gelu) for b in blocks}  # open_clip names the module "gelu" whatever it is
    if len(activations) != 1 or None in activations:
        return f"uses activation {blocks[0].mlp.gelu!r} (or mixes them)"
    return None


def tower_fields(transformer: nn.Module) -> dict:
    """HF CLIP tower config fields of an open_clip transformer whose blocks passed `unsupported_blocks`."""
    block = transformer.resblocks[0]
    return dict(hidden_size=transformer.width, intermediate_size=block.mlp.c_fc.out_features,
                num_hidden_layers=len(transformer.resblocks), num_attention_heads=block.attn.num_heads,
                hidden_act=hf_activation(block.mlp.gelu), layer_norm_eps=block.ln_1.eps)


def vision_config_from_open_clip(visual: nn.Module) -> CLIPVisionConfig:
    """The HF CLIPVisionConfig of an open_clip ViT image tower's blocks (what STAN's blocks copy)."""
    reason = unsupported_blocks(list(visual.transformer.resblocks))
    if reason is not None:
        raise WeightsError(f"this open_clip image tower {reason}")
    return CLIPVisionConfig(**tower_fields(visual.transformer), image_size=visual.image_size[0],
                            patch_size=visual.patch_size[0], projection_dim=visual.output_dim)
