"""CoCa towers (open_clip) with the STAN branch: the video-text model for the paper's CoCa backbones.

HF `CLIPModel` cannot hold a CoCa (see `stanchat.convert.openclip.COCA_REASON`), so `CoCaVideoCLIP`
runs open_clip's own CoCa modules: the image tower (ViT, attentional pooler, ln_post, proj) and
the text tower (causal transformer with an appended CLS token). CoCa's text decoder (the
captioning head, cross-attending image tokens) is dropped when the model is built: video-text
contrastive scoring and Mug never run it, and it is 40% of coca_ViT-B-32's weights (101M of 254M).

Vision. The ViT runs through `stanchat.stan.run_video_tower` via `OpenCLIPVisionTower`, which
exposes open_clip's blocks in HF layer semantics (the output of block i is HF's
`hidden_states[i + 1]`, `stanchat.convert.open_clip_block_to_hidden_state`), so STAN pairs with
blocks as it pairs with HF layers, sized by `stanchat.openclip_blocks`. A fresh branch on an open_clip
CoCa (spatial blocks start as the paired resblocks, q/k/v split through the converter's key table)
is built in `stanchat.convert.openclip_models` (`cocaclip_from_coca`, `cocaclip_from_open_clip`):
converters import models, this module imports no converter. STAN is fused at the token level: for every
frame t, the last block's tokens become

    [CLS_t + STAN CLS, patch_{l,t} + STAN patch_{l,t}]    (STAN patches from `split_tokens`)

and CoCa's own head runs on them per frame exactly as open_clip runs it on an image
(`attn_pool` -> `ln_post` -> the first, contrastive, query -> `proj`), giving frame features
(B, T, P). For a CLS-pooled tower (head = `ln_post(CLS) @ proj`, e.g. open_clip's `coca_base`)
only the CLS reaches the head, so this reduces to DESIGN.md's recipe
`post_layernorm(CLIP last CLS + STAN CLS) -> projection`. `encode_video(..., with_stan=False)`
feeds the head the tower's own tokens: open_clip's `encode_image` of each frame.

Text. `pooled` is open_clip's own `encode_text` output (unnormalised): ln_final of the appended
CLS position, projected. `tokens`, for Mug, are the last block's outputs at the input positions
through the same ln_final and text_projection, so tokens and pooled share one space, as HF CLIP's
`last_hidden_state` and `pooler_output` do. The appended CLS position is not a word: it is
dropped, so tokens align with `input_ids` (B, N, P) and the caller's padding mask applies as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from stanchat.errors import WeightsError
from stanchat.openclip_blocks import unsupported_blocks, vision_config_from_open_clip
from stanchat.stan import STAN, STANConfig, VisionTower, run_video_tower, split_tokens
from stanchat.videomodel import SavedConfig, VideoTextModel, load_state_dict_strict

ARCHITECTURE = "stanchat.CoCaVideoCLIP"


@dataclass
class CoCaVideoCLIPConfig(SavedConfig):
    architecture: ClassVar[str] = ARCHITECTURE
    open_clip: dict  # open_clip CoCa config: `open_clip.CoCa(**open_clip)` builds it (embed_dim, *_cfg, quick_gelu)
    stan: STANConfig = field(default_factory=STANConfig)  # the branch; ends at the last block (the head reads it)
    logit_scale: float = 100.0  # tau: fixed logit scale used by training and by Mug
    source: str = ""  # where the backbone weights came from (open_clip name and tag)


class OpenCLIPVisionTower(VisionTower):
    """An open_clip ViT image tower as a `VisionTower`: `layer(i, x)` runs `resblocks[i]`, whose
    output is HF's `hidden_states[i + 1]`. Calls open_clip's own modules."""

    def __init__(self, visual: nn.Module):
        self.visual = visual

    @property
    def class_embedding(self) -> torch.Tensor:
        return self.visual.class_embedding

    @property
    def num_layers(self) -> int:
        return len(self.visual.transformer.resblocks)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        size = tuple(self.visual.image_size)
        if tuple(frames.shape[-2:]) != size:
            raise ValueError(f"this open_clip tower takes {size[0]}x{size[1]} images (fixed position embedding), "
                             f"got {tuple(frames.shape[-2:])}; resize the frames")
        return self.visual._embeds(frames)  # open_clip's conv1, CLS, positions, ln_pre: (N, 1+L, D)

    def layer(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        block = self.visual.transformer.resblocks[index]
        if self.visual.transformer.grad_checkpointing:  # as open_clip's Transformer.forward checkpoints
            return checkpoint(block, hidden, None, None, None, use_reentrant=False)
        return block(hidden)

    def position_embedding(self, hidden: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.visual.positional_embedding  # (1+L, D); `embed` admits only the native size


def fuse_stan_tokens(last: torch.Tensor, branch: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Token-level fusion: frame t's tokens become [CLS_t + STAN CLS, patch_{l,t} + STAN patch_{l,t}].
    last (B*T, 1+L, D), branch (B, 1+L*T, D) -> (B*T, 1+L, D)."""
    cls, patches = split_tokens(branch, num_frames)  # (B, D), (B, T, L, D)
    cls = cls[:, None, None].expand(-1, num_frames, 1, -1)  # (B, T, 1, D): the one video CLS joins every frame
    return last + torch.cat([cls, patches], dim=2).flatten(0, 1)  # (B, T, 1+L, D) -> (B*T, 1+L, D)


def coca_unsupported(model: nn.Module) -> str | None:
    """Why `model` is not a CoCa that `CoCaVideoCLIP` can run, or None when it is: an open_clip ViT
    image tower with plain blocks (STAN pairs with them), all patches kept, and one pooled image
    feature; open_clip's own text transformer."""
    import open_clip  # an optional extra, imported when a CoCa is built
    from open_clip.transformer import TextTransformer, VisionTransformer

    if not isinstance(model, open_clip.CoCa):
        return f"is an open_clip {type(model).__name__}, not a CoCa model"
    visual = model.visual
    if not isinstance(visual, VisionTransformer) or not isinstance(model.text, TextTransformer):
        return "does not have open_clip's own ViT image tower and text transformer"
    if visual.attn_pool is not None and visual.attn_pool_type != "":  # the type exists only with a pooler
        return f"uses open_clip's experimental {visual.attn_pool_type!r} attentional pooling"
    blocks = list(visual.transformer.resblocks)
    checks = (
        (visual.pool_type == "none", "pools images by 'none' (no single image feature)"),
        (visual.proj is None or model.text.text_projection is None, "has no image or text projection"),
        (not isinstance(visual.patch_dropout, nn.Identity), "uses patch dropout (STAN needs every patch)"),
        (not visual.transformer.batch_first, "runs its image transformer sequence-first"),
        (len({m.eps for b in blocks for m in b.modules() if isinstance(m, nn.LayerNorm)}) != 1,
         "mixes LayerNorm eps values in its image blocks"),
    )
    return next((reason for failed, reason in checks if failed), None) or unsupported_blocks(blocks)


def build_coca(open_clip_config: dict) -> nn.Module:
    """open_clip's CoCa from its config dict, text decoder dropped; refuses variants it cannot run."""
    import open_clip

    try:
        coca = open_clip.CoCa(**open_clip_config)
    except TypeError as err:  # an unknown key in the config or one of its *_cfg dicts
        raise WeightsError(f"this open_clip config does not build a CoCa ({err}); re-save the model") from err
    coca.text_decoder = None  # captioning only; never run here (see the module docstring)
    reason = coca_unsupported(coca)
    if reason is not None:
        raise WeightsError(f"this open_clip model {reason}; CoCaVideoCLIP cannot run it")
    return coca


def _project(x: torch.Tensor, projection: nn.Module | torch.Tensor) -> torch.Tensor:
    """open_clip's text projection: a Linear, or a (width, P) matrix used as `x @ proj`."""
    return projection(x) if isinstance(projection, nn.Module) else x @ projection


class CoCaVideoCLIP(VideoTextModel):
    """open_clip CoCa towers + STAN for video-text retrieval and recognition.

    Attributes: `coca` (open_clip `CoCa`, `text_decoder` None), `stan` (`STAN`), `end` (the last
    block, which STAN ends at). `from_pretrained`, `save_pretrained` and `similarity` come from
    `VideoTextModel`; a fresh one on open_clip weights comes from `stanchat.convert.cocaclip_from_open_clip`
    (or `video_model_from_open_clip`, which picks the class by the open_clip config).
    """

    config_class = CoCaVideoCLIPConfig

    def __init__(self, config: CoCaVideoCLIPConfig):
        super().__init__()
        self.config = config
        self.coca = build_coca(config.open_clip)
        num_layers = len(self.coca.visual.transformer.resblocks)
        self.end = config.stan.resolve_end(num_layers)
        if self.end != num_layers - 1:
            raise ValueError(f"CoCaVideoCLIP fuses STAN into the last block's tokens (CoCa's pooler reads them); "
                             f"STANConfig.end_layer must be -1 or {num_layers - 1}, got {config.stan.end_layer}")
        self.stan = STAN(config.stan, vision_config_from_open_clip(self.coca.visual))

    @property
    def tower(self) -> OpenCLIPVisionTower:
        """The image tower as `run_video_tower` sees it."""
        return OpenCLIPVisionTower(self.coca.visual)

    def image_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """CoCa's image head on last-block tokens, as open_clip runs it on an image (its `_pool`:
        attn_pool -> ln_post -> the contrastive query; then proj). (N, 1+L, D) -> (N, P)."""
        visual = self.coca.visual
        pooled, _ = visual._pool(tokens)  # open_clip's own order of operations
        return pooled @ visual.proj

    def encode_video(self, pixel_values: torch.Tensor, with_stan: bool = True, views: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """Per-frame video features. pixel_values (B, T, 3, H, W) -> (B, T, P), unnormalised.
        `with_stan=False` skips the branch: open_clip's own image feature of each frame.
        `views` (V, T'): each clip as V videos of frames `views[v]` -> (V*B, T', P) (`run_video_tower`)."""
        b, t = pixel_values.shape[:2] if views is None else (pixel_values.shape[0] * views.shape[0], views.shape[1])
        last, branch = run_video_tower(self.tower, self.stan if with_stan else None, pixel_values, self.end, views)
        if branch is not None:
            last = fuse_stan_tokens(last, branch, t)  # (B*T, 1+L, D)
        return self.image_head(last).reshape(b, t, -1)  # (B*T, P) -> (B, T, P)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token features (B, N, P) for Mug and the pooled (appended CLS) feature (B, P), unnormalised.

        CoCa's text tower masks padding itself, by token id (open_clip's tokenizer pads with 0), so
        `attention_mask`, when given, must equal `input_ids != pad_id`."""
        text = self.coca.text
        if input_ids.dim() != 2:
            raise ValueError(f"expected input_ids of shape (B, N), got {tuple(input_ids.shape)}")
        if input_ids.shape[1] > text.context_length:
            raise ValueError(f"CoCa's text tower takes at most {text.context_length} tokens, got {input_ids.shape[1]}; "
                             f"tokenize with context_length={text.context_length}")
        if attention_mask is not None and not torch.equal(attention_mask.bool(), input_ids != text.pad_id):
            raise ValueError(f"CoCa's text tower masks padding by token id {text.pad_id}; attention_mask must "
                             f"equal input_ids != {text.pad_id}")
        last_block = len(text.transformer.resblocks) - 1
        out = text.forward_intermediates(input_ids, indices=[last_block], output_fmt="NLC")
        tokens = text.ln_final(out["text_intermediates"][0])  # (B, N, W): input positions, appended CLS dropped
        return _project(tokens, text.text_projection), out["text_features"]

    @property
    def image_size(self) -> int:
        height, width = self.coca.visual.image_size
        if height != width:
            raise ValueError(f"this CoCa's image tower takes {height}x{width} images; stanchat samples square frames")
        return height

    @property
    def text_length(self) -> int:
        return self.coca.text.context_length

    def freeze_clip(self) -> None:
        """Freeze every CoCa weight; only the STAN branch trains."""
        self.coca.requires_grad_(False)

    def freeze_text(self) -> None:
        self.coca.text.requires_grad_(False)

    def freeze_logit_scale(self) -> None:
        self.coca.logit_scale.requires_grad_(False)
        if self.coca.logit_bias is not None:  # open_clip's optional SigLIP-style bias
            self.coca.logit_bias.requires_grad_(False)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute activations in the backward pass, for CoCa blocks and STAN blocks alike."""
        self.stan.gradient_checkpointing = enabled
        self.coca.visual.set_grad_checkpointing(enabled)
        self.coca.text.set_grad_checkpointing(enabled)
