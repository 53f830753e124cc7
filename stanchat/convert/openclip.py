"""open_clip CLIP models <-> HF `CLIPModel`: architecture config, weights and layer indices.

open_clip and HF CLIP run the same ViT; they differ in names and packing:
- attention: open_clip packs q, k, v into one `attn.in_proj_{weight,bias}` (3D rows, q first);
  HF keeps `self_attn.{q,k,v}_proj`.
- projections: open_clip stores `proj`/`text_projection` as (width, P) matrices used as `x @ proj`;
  HF stores `nn.Linear(width, P).weight`, i.e. the transpose.
- layers: open_clip's `resblocks.{i}` is HF's `encoder.layers.{i}`; its `forward_intermediates`
  output for block i is HF's `hidden_states[i + 1]` (`hidden_states[0]` is the embedding after
  `pre_layrnorm`). `open_clip_block_to_hidden_state` is that translation; `STANConfig.end_layer`
  indexes blocks and encoder layers alike.
- text pooling: open_clip's default takes the token with the largest id (the EOT token of its
  tokenizer); transformers' `CLIPTextModel` does exactly that when `eos_token_id == 2` (its legacy
  path), so converted configs set 2. open_clip's "eos" pooling maps to transformers' first-EOS path.
- activation: OpenAI-pretrained weights use QuickGELU, LAION ones exact GELU; the converted config
  takes it from the built model's modules, so it is whatever open_clip itself runs.

`_key_pairs` (built from `_block_pairs`, one transformer block) is the only table of names; the
weights go both ways through it, and STAN's spatial blocks on an open_clip tower are initialised
through it (`encoder_layer_state_from_open_clip`).
Whether open_clip blocks compute what HF CLIP layers compute, and their sizes, is
`stanchat.openclip_blocks` (the CoCa model asks it too). CoCa cannot become a HF CLIPModel (see
`COCA_REASON`); `stanchat.cocaclip.CoCaVideoCLIP` runs it natively, and
`stanchat.convert.openclip_models` builds either model from an open_clip name.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel

from stanchat.errors import WeightsError
from stanchat.openclip_blocks import tower_fields, unsupported_blocks

COCA_REASON = (
    "is a CoCa model, which HF CLIPModel (and so VideoCLIP) cannot hold: its image feature is an attentional "
    "pooler's first query (learned queries cross-attending all last-layer tokens, then ln_post and proj), not "
    "the CLS token, and its text feature is an appended CLS token under a padding mask; build a CoCaVideoCLIP "
    "with stanchat.convert.video_model_from_open_clip (as `stanchat convert open-clip` does)"
)
ARGMAX_EOS_ID = 2  # transformers' CLIPTextModel pools at argmax(input_ids) exactly when eos_token_id == 2


def open_clip_block_to_hidden_state(block: int, num_layers: int) -> int:
    """HF `hidden_states` index holding the output of open_clip `resblocks[block]` (negative counts
    from the end, as in open_clip's `forward_intermediates(indices=[block])`)."""
    if not -num_layers <= block < num_layers:
        raise ValueError(f"block {block} is outside a {num_layers}-block tower")
    return block % num_layers + 1


def _block_pairs(hf: str, oc: str) -> list[tuple[str, str, str]]:
    """(HF CLIPEncoderLayer key, open_clip ResidualAttentionBlock key, how) for one block whose keys
    start with the prefixes `hf` and `oc` (each "" or ending in ".")."""
    same = [("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("mlp.fc1", "mlp.c_fc"),
            ("mlp.fc2", "mlp.c_proj"), ("layer_norm2", "ln_2")]
    pairs = [(f"{hf}{a}.{p}", f"{oc}{b}.{p}", "copy") for a, b in same for p in ("weight", "bias")]
    qkv = [(f"{hf}self_attn.{q}_proj.{p}", f"{oc}attn.in_proj_{p}", q) for q in "qkv" for p in ("weight", "bias")]
    return pairs + qkv


def _key_pairs(vision_layers: int, text_layers: int) -> list[tuple[str, str, str]]:
    """(HF CLIPModel key, open_clip CLIP key, how) for every weight. how: "copy", "transpose"
    (projection matrices), "q"/"k"/"v" (that third of the packed in_proj rows), "scalar" (open_clip
    may keep the logit scale as shape (1,); HF as ())."""
    pairs = [
        ("vision_model.embeddings.class_embedding", "visual.class_embedding", "copy"),
        ("vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight", "copy"),
        ("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding", "copy"),
        ("visual_projection.weight", "visual.proj", "transpose"),
        ("text_model.embeddings.token_embedding.weight", "token_embedding.weight", "copy"),
        ("text_model.embeddings.position_embedding.weight", "positional_embedding", "copy"),
        ("text_projection.weight", "text_projection", "transpose"),
        ("logit_scale", "logit_scale", "scalar"),
    ]
    # modules whose weight and bias carry over unchanged
    same = [("vision_model.pre_layrnorm", "visual.ln_pre"), ("vision_model.post_layernorm", "visual.ln_post"),
            ("text_model.final_layer_norm", "ln_final")]
    towers = [("vision_model.encoder.layers", "visual.transformer.resblocks", vision_layers),
              ("text_model.encoder.layers", "transformer.resblocks", text_layers)]
    pairs += [(f"{hf}.{p}", f"{oc}.{p}", "copy") for hf, oc in same for p in ("weight", "bias")]
    for hf, oc, n in towers:
        for i in range(n):
            pairs += _block_pairs(f"{hf}.{i}.", f"{oc}.{i}.")
    return pairs


def encoder_layer_state_from_open_clip(block: nn.Module) -> dict[str, torch.Tensor]:
    """One open_clip resblock's weights in HF `CLIPEncoderLayer` layout (q, k, v split from the
    packed in_proj), e.g. to initialise a STAN spatial block from its paired open_clip block.
    Every block weight must be used exactly once."""
    reason = unsupported_blocks([block])
    if reason is not None:
        raise WeightsError(f"this open_clip block {reason}")
    theirs = block.state_dict()
    pairs = _block_pairs("", "")
    leftover = sorted(set(theirs) - {oc for _, oc, _ in pairs})
    if leftover:
        raise WeightsError(f"open_clip block weights with no HF CLIP place: {', '.join(leftover)}")
    return {hf: _from_open_clip(theirs[oc], how).contiguous() for hf, oc, how in pairs}


def _from_open_clip(value: torch.Tensor, how: str) -> torch.Tensor:
    if how == "transpose":
        return value.t()
    if how in ("q", "k", "v"):
        return value.chunk(3, dim=0)["qkv".index(how)]  # in_proj rows (3D, ...) -> this part's (D, ...)
    if how == "scalar":
        return value.reshape(())
    return value


def _unsupported(model: nn.Module) -> str | None:
    """Why `model` cannot become a HF CLIPModel, or None when it can."""
    import open_clip
    from open_clip.transformer import VisionTransformer

    if isinstance(model, open_clip.CoCa):
        return COCA_REASON
    if type(model) is not open_clip.CLIP:
        return f"is an open_clip {type(model).__name__}; only open_clip.CLIP (ViT image tower, own text transformer) converts"
    visual = model.visual
    if not isinstance(visual, VisionTransformer):
        return f"has a {type(visual).__name__} image tower; only ViT towers convert to HF CLIP"
    blocks = list(visual.transformer.resblocks) + list(model.transformer.resblocks)
    eps = {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}
    checks = (
        (visual.attn_pool is not None, "pools images with an attentional pooler"),
        (visual.pool_type != "tok", f"pools images by {visual.pool_type!r}, not the CLS token"),
        (not isinstance(visual.ln_pre, nn.LayerNorm), "has no ln_pre"),
        (visual.proj is None or model.text_projection is None, "has no image or text projection"),
        (isinstance(model.text_projection, nn.Linear) and model.text_projection.bias is not None,
         "has a text projection bias"),
        (visual.image_size[0] != visual.image_size[1] or visual.patch_size[0] != visual.patch_size[1],
         "has non-square images or patches"),
        (model.attn_mask is None, "has a text tower without causal mask"),
        (model.text_pool_type not in ("argmax", "eos"), f"pools text by {model.text_pool_type!r}"),
        (model.text_pool_type == "eos" and model.text_eos_id == ARGMAX_EOS_ID, "pools text at eos id 2"),
        (model.logit_bias is not None, "has a logit bias (sigmoid-loss model)"),
        (len(eps) != 1, f"mixes LayerNorm eps values {sorted(eps)}"),
    )
    return next((reason for failed, reason in checks if failed), None) or unsupported_blocks(blocks)


def clip_config_from_open_clip(model: nn.Module) -> CLIPConfig:
    """The HF CLIPConfig that runs the same computation as an open_clip CLIP model."""
    reason = _unsupported(model)
    if reason is not None:
        raise WeightsError(f"this open_clip model {reason}")
    visual = model.visual
    projection_dim = visual.proj.shape[1]
    vision = tower_fields(visual.transformer) | dict(image_size=visual.image_size[0], patch_size=visual.patch_size[0],
                                                      projection_dim=projection_dim)
    eos = ARGMAX_EOS_ID if model.text_pool_type == "argmax" else model.text_eos_id
    text_config = tower_fields(model.transformer) | dict(
        projection_dim=projection_dim, vocab_size=model.token_embedding.num_embeddings,
        max_position_embeddings=model.positional_embedding.shape[0], eos_token_id=eos)
    return CLIPConfig(text_config=text_config, vision_config=vision, projection_dim=projection_dim,
                      logit_scale_init_value=float(model.logit_scale.detach().reshape(())))


def clip_from_open_clip(model: nn.Module) -> CLIPModel:
    """A HF CLIPModel holding an open_clip CLIP model's weights; features agree to float rounding.

    Every open_clip weight is used exactly once and every HF weight is written exactly once, with
    shapes asserted before copying; an open_clip weight left over is an error naming it.
    """
    config = clip_config_from_open_clip(model)
    clip = CLIPModel(config).eval()
    own, theirs = clip.state_dict(), model.state_dict()
    pairs = _key_pairs(config.vision_config.num_hidden_layers, config.text_config.num_hidden_layers)
    assert len(pairs) == len(own) and {hf for hf, _, _ in pairs} == set(own), "translation table out of date"
    leftover = sorted(set(theirs) - {oc for _, oc, _ in pairs})
    if leftover:
        raise WeightsError(f"open_clip weights with no HF CLIP place: {', '.join(leftover[:6])}")
    state = {hf: _from_open_clip(theirs[oc], how) for hf, oc, how in pairs}
    bad = [f"{hf} {tuple(v.shape)} != {tuple(own[hf].shape)}" for hf, v in state.items() if v.shape != own[hf].shape]
    if bad:
        raise WeightsError(f"open_clip weights do not fit the derived HF config: {', '.join(bad[:6])}")
    clip.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True)
    return clip


def open_clip_state_dict(clip: CLIPModel) -> dict[str, torch.Tensor]:
    """The inverse: a HF CLIPModel's weights under open_clip CLIP names (q, k, v packed again)."""
    own = clip.state_dict()
    pairs = _key_pairs(clip.config.vision_config.num_hidden_layers, clip.config.text_config.num_hidden_layers)
    out: dict[str, torch.Tensor] = {}
    for hf, oc, how in pairs:
        if how in ("q", "k", "v"):
            if how == "q":  # write the packed tensor once, from its three HF parts in q, k, v order
                out[oc] = torch.cat([own[hf.replace(".q_proj.", f".{part}_proj.")] for part in "qkv"], dim=0)
        else:
            out[oc] = own[hf].t().contiguous() if how == "transpose" else own[hf].clone()
    return out


def open_clip_model_config(model_name: str) -> dict:
    """open_clip's architecture config for a model name (a copy); unknown names list the valid ones."""
    import open_clip

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise WeightsError(f"unknown open_clip model {model_name!r}; choose one of {', '.join(open_clip.list_models())}")
    return cfg


def is_coca_config(cfg: dict) -> bool:
    """Whether an open_clip config builds a CoCa: open_clip's own rule (a `multimodal_cfg`, the text
    decoder's config, is present)."""
    return "multimodal_cfg" in cfg


def load_open_clip(model_name: str, pretrained: str | None = None) -> nn.Module:
    """Build an open_clip model by name, with weights by tag or file (`pretrained`), in eval mode.

    Unknown names and tags list the valid ones before any download. A tag trained with QuickGELU
    gets QuickGELU even under a plain model name (open_clip itself only warns)."""
    import open_clip

    open_clip_model_config(model_name)
    tag = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    if pretrained and not tag and not Path(pretrained).is_file():
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise WeightsError(f"unknown pretrained tag {pretrained!r} for open_clip {model_name}; choose one of {tags} "
                           f"or pass a checkpoint file")
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, force_quick_gelu=tag.get("quick_gelu", False))
    except Exception as err:  # offline, not cached, corrupt file: all mean "weights not here"
        detail = " ".join(str(err).split())[:300]  # hub errors span lines; the CLI prints one
        raise WeightsError(f"could not load open_clip {model_name} weights {pretrained!r} ({detail}); run once with "
                           f"network so open_clip caches them, or pass a local checkpoint file") from err
    return model.eval()
