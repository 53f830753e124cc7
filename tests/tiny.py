"""Tiny models built in code for tests: never downloaded, a few ms per forward pass."""

from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig


def tiny_vision_config(layers: int = 4, image_size: int = 16, patch_size: int = 8, width: int = 32) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=4,
        image_size=image_size, patch_size=patch_size, projection_dim=24,
    )


def tiny_clip(seed: int = 0, layers: int = 4, image_size: int = 16, patch_size: int = 8) -> CLIPModel:
    """A random CLIP (width 32, `layers` vision layers, 2 text layers, projection 24)."""
    torch.manual_seed(seed)
    text = CLIPTextConfig(
        vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=16, projection_dim=24, eos_token_id=2, bos_token_id=0, pad_token_id=1,
    )
    vision = tiny_vision_config(layers, image_size, patch_size)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=24)
    return CLIPModel(config).eval()


def randomise(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter random values (e.g. the zero-initialised temporal_fc), so tests see
    every path of a module rather than the identity it starts as."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return module


# tiny_clip()'s architecture in open_clip terms: width 32, 4 heads, MLP 64, proj 24, vocab 99, 16 tokens
TINY_OPEN_CLIP_CFG = dict(
    embed_dim=24,
    vision_cfg=dict(image_size=16, patch_size=8, width=32, layers=4, head_width=8, mlp_ratio=2.0),
    text_cfg=dict(context_length=16, vocab_size=99, width=32, heads=4, layers=2, mlp_ratio=2.0),
)
# a tiny CoCa in open_clip's JSON form (`custom_text` is the factory's key; CoCa(**cfg) takes the rest):
# attentional pooler with 4 queries, text of 15 tokens + the appended CLS, a 1-layer decoder
TINY_COCA_CFG = dict(
    embed_dim=24, custom_text=True,
    vision_cfg=dict(TINY_OPEN_CLIP_CFG["vision_cfg"], attentional_pool=True, attn_pooler_heads=4,
                    attn_pooler_queries=4, output_tokens=True),
    text_cfg=dict(TINY_OPEN_CLIP_CFG["text_cfg"], context_length=15, embed_cls=True, output_tokens=True),
    multimodal_cfg=dict(context_length=15, vocab_size=99, width=32, heads=4, layers=1, attn_pooler_heads=4),
)
