"""The STAN branch (Mug-STAN, arXiv 2311.15075, Sec. 3.2) beside a CLIP vision tower (HF CLIP, or
open_clip through a `VisionTower` adapter; both run the same `run_video_tower` loop).

STAN reads the outputs of K consecutive CLIP layers ending at layer `end` for every frame, and
alternates a temporal block (attention across the T frames of each patch position) with a spatial
block (a CLIP encoder layer, initialised from its paired layer, attending within each frame).

Shape letters: B batch, T frames, L patches per frame (CLS not counted), D width, K depth.
Token layout inside the branch: `[video CLS, patches in (l t) order]`, length 1 + L*T, so the T
frames of one patch position are contiguous.

Layer indices: `end` is a 0-based index into `tower.encoder.layers`; HF's
`hidden_states[i + 1]` is the output of layer i. `end_layer_for_feature_layer` translates LLaVA's
`vision_feature_layer` (an index into `hidden_states`) into that convention; nothing else does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import CLIPVisionConfig, CLIPVisionModel
from transformers.activations import ACT2FN


@dataclass
class STANConfig:
    depth: int = 4  # K: STAN layers (the paper uses 4; 6 for motion-heavy data such as SSv2)
    end_layer: int = -1  # last paired CLIP layer, index into encoder.layers (negative counts from the end)
    max_frames: int = 64  # size of the learned temporal embedding; longer clips are rejected
    drop_path_rate: float = 0.1  # temporal blocks use linspace(0, rate, K)[k]
    input_projection: bool = False  # paper Eq. 6-7: D x D projection on the CLIP input of layers k > 0

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"STANConfig.depth must be >= 1, got {self.depth}")
        if not 1 <= self.max_frames:
            raise ValueError(f"STANConfig.max_frames must be >= 1, got {self.max_frames}")

    def paired_layers(self, num_layers: int) -> range:
        """The 0-based indices of the K CLIP layers the branch reads in a tower of `num_layers`
        layers: K consecutive layers ending at `end_layer`. The one place they are computed."""
        fits = -num_layers <= self.end_layer < num_layers
        layers = layers_ending_at(self.end_layer % num_layers, self.depth) if fits else None
        if layers is None or layers.start < 0:
            raise ValueError(
                f"STAN of depth {self.depth} ending at layer {self.end_layer} does not fit a tower of "
                f"{num_layers} layers: need {self.depth - 1} <= end < {num_layers} (or a negative index)"
            )
        return layers

    def resolve_end(self, num_layers: int) -> int:
        """The non-negative index of the last paired CLIP layer in a tower of `num_layers` layers."""
        return self.paired_layers(num_layers)[-1]


def layers_ending_at(end: int, depth: int) -> range:
    """K = `depth` consecutive layer indices ending at layer `end` (`STANConfig.paired_layers`; the
    graft pairs a branch with the layer LLaVA reads, which may not be the branch's own `end_layer`)."""
    return range(end - depth + 1, end + 1)


def end_layer_for_feature_layer(vision_feature_layer: int, num_layers: int) -> int:
    """Translate LLaVA's `vision_feature_layer` (index into HF `hidden_states`, M+1 entries) into
    the 0-based encoder layer whose output it selects. -2 -> M-2; 0 (the embeddings) is refused."""
    index = vision_feature_layer % (num_layers + 1) if -num_layers - 1 <= vision_feature_layer <= num_layers else 0
    if index == 0:
        raise ValueError(
            f"vision_feature_layer={vision_feature_layer} does not select a layer output of a "
            f"{num_layers}-layer tower; use 1..{num_layers} or -{num_layers}..-1"
        )
    return index - 1


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability `rate`."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - rate)
    return x * keep / (1.0 - rate)


class Attention(nn.Module):
    """Multi-head self-attention with CLIP's parameter names (`{q,k,v,out}_proj`), on SDPA."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(width, width) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, s, d = x.shape
        # (N, S, D) -> (N, heads, S, D/heads)
        q, k, v = (p(x).view(n, s, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v)  # scale = head_dim ** -0.5, as in CLIP
        return self.out_proj(y.transpose(1, 2).reshape(n, s, d))


class MLP(nn.Module):
    """CLIP's feed-forward block (`fc1`, activation, `fc2`)."""

    def __init__(self, width: int, hidden: int, act: str):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden), ACT2FN[act], nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TemporalBlock(nn.Module):
    """LN -> attention over the T frames of each patch position -> zero-initialised `temporal_fc`
    -> residual. The video CLS passes unchanged. With `temporal_fc` at zero the block starts as the
    identity, so a fresh branch does not disturb the CLIP features it reads."""

    def __init__(self, cfg: CLIPVisionConfig, drop_path_rate: float):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = Attention(cfg.hidden_size, cfg.num_attention_heads)
        self.temporal_fc = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        nn.init.zeros_(self.temporal_fc.weight)
        nn.init.zeros_(self.temporal_fc.bias)
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        b, s, d = x.shape
        cls, patches = x[:, :1], x[:, 1:]
        p = patches.reshape(b * (s - 1) // num_frames, num_frames, d)  # (B, L*T, D) -> (B*L, T, D)
        p = p + drop_path(self.temporal_fc(self.self_attn(self.layer_norm1(p))), self.drop_path_rate, self.training)
        return torch.cat([cls, p.reshape(b, s - 1, d)], dim=1)


class SpatialBlock(nn.Module):
    """A CLIP encoder layer run per frame: the video CLS is copied into every frame, attention runs
    over `[cls, L patches]` of each frame, the CLS outputs are averaged over frames, then the MLP
    residual on all tokens. State-dict compatible with HF `CLIPEncoderLayer`."""

    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        self.self_attn = Attention(cfg.hidden_size, cfg.num_attention_heads)
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        b, s, d = x.shape
        t, l = num_frames, (s - 1) // num_frames
        frames = x[:, 1:].reshape(b, l, t, d).transpose(1, 2).reshape(b * t, l, d)  # (B, L*T, D) -> (B*T, L, D)
        y = torch.cat([x[:, :1].repeat_interleave(t, dim=0), frames], dim=1)  # (B*T, 1+L, D)
        y = y + self.self_attn(self.layer_norm1(y))
        cls = y[:, :1].reshape(b, t, 1, d).mean(dim=1)  # (B*T, 1, D) -> (B, 1, D)
        patches = y[:, 1:].reshape(b, t, l, d).transpose(1, 2).reshape(b, l * t, d)  # -> (B, L*T, D)
        x = torch.cat([cls, patches], dim=1)
        return x + self.mlp(self.layer_norm2(x))


def video_tokens(hidden: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`[mean_t CLS, patches in (l t) order]` of one CLIP layer output.
    (B*T, 1+L, D) -> (B, 1+L*T, D)."""
    bt, s, d = hidden.shape
    h = hidden.reshape(bt // num_frames, num_frames, s, d)  # (B, T, 1+L, D)
    patches = h[:, :, 1:].transpose(1, 2).reshape(h.shape[0], -1, d)  # (B, L*T, D)
    return torch.cat([h[:, :, :1].mean(dim=1), patches], dim=1)


def split_tokens(x: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a STAN output into its video CLS (B, D) and patches (B, T, L, D)."""
    b, s, d = x.shape
    patches = x[:, 1:].reshape(b, (s - 1) // num_frames, num_frames, d).transpose(1, 2)  # (B, L, T, D) -> (B, T, L, D)
    return x[:, 0], patches



def fuse_frames(hidden: torch.Tensor, branch: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The graft's fusion, frame by frame: frame t's CLIP tokens of the end layer averaged with the
    STAN's tokens of frame t (its CLS with the video CLS). Their mean over frames is the graft's
    video tokens (DESIGN.md): `CLS = (mean_t CLIP CLS + STAN CLS) / 2`, `patch_l = (mean_t CLIP
    patch_l + mean_t STAN patch_l) / 2`. hidden (B*T, 1+L, D), branch (B, 1+L*T, D) -> (B, T, 1+L, D)."""
    cls, patches = split_tokens(branch, num_frames)  # (B, D), (B, T, L, D)
    b = cls.shape[0]
    stan = torch.cat([cls[:, None, None].expand(b, num_frames, 1, -1), patches], dim=2)  # (B, T, 1+L, D)
    frames = hidden.reshape(b, num_frames, *hidden.shape[1:])  # (B*T, 1+L, D) -> (B, T, 1+L, D)
    return (frames + stan.to(frames.dtype)) / 2


def _view(hidden: torch.Tensor, num_clips: int, views: torch.Tensor | None) -> torch.Tensor:
    """Per-frame tower states rearranged into the clips' views (see `run_video_tower`).
    (B*T, 1+L, D) -> (V*B*T', 1+L, D)."""
    if views is None:
        return hidden
    frames = hidden.reshape(num_clips, -1, *hidden.shape[1:])  # (B, T, 1+L, D)
    return frames[:, views].transpose(0, 1).flatten(0, 2)  # (B, V, T', 1+L, D) -> (V, B, T', ...) -> (V*B*T', ...)


class STAN(nn.Module):
    """The STAN branch: K (temporal, spatial) layer pairs plus a learned temporal embedding.

    `forward` takes the K paired CLIP layer outputs (each (B*T, 1+L, D)) and returns the branch
    output (B, 1+L*T, D) in `[cls, (l t) patches]` layout. The tower's own class and position
    embeddings are passed in, so STAN follows whatever resolution the tower runs at.
    """

    def __init__(self, config: STANConfig, vision_config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        width, k = vision_config.hidden_size, config.depth
        # python floats; on the CPU so that STAN can also be built under a meta device
        rates = torch.linspace(0, config.drop_path_rate, k, device="cpu").tolist()
        self.temporal_layers = nn.ModuleList(TemporalBlock(vision_config, r) for r in rates)
        self.spatial_layers = nn.ModuleList(SpatialBlock(vision_config) for _ in range(k))
        self.time_embed = nn.Embedding(config.max_frames, width)
        nn.init.normal_(self.time_embed.weight, std=0.02)
        self.input_projs = None
        if config.input_projection:
            self.input_projs = nn.ModuleList(nn.Linear(width, width) for _ in range(k - 1))
            for proj in self.input_projs:  # identity at init: starts as the released plain sum
                nn.init.eye_(proj.weight)
                nn.init.zeros_(proj.bias)
        self.gradient_checkpointing = False

    def init_from_clip(self, clip_layers: Sequence[nn.Module]) -> None:
        """Copy the K paired CLIP encoder layers into the spatial blocks (paper: spatial attention
        is initialised from CLIP)."""
        self.init_from_layer_states([layer.state_dict() for layer in clip_layers])

    def init_from_layer_states(self, states: Sequence[Mapping[str, torch.Tensor]]) -> None:
        """Copy K state dicts in HF `CLIPEncoderLayer` layout into the spatial blocks (strict: keys
        and shapes must match). `stanchat.convert.encoder_layer_state_from_open_clip` makes them
        from open_clip resblocks."""
        if len(states) != len(self.spatial_layers):
            raise ValueError(f"expected {len(self.spatial_layers)} paired CLIP layers, got {len(states)}")
        for block, state in zip(self.spatial_layers, states):
            block.load_state_dict(state)

    def embed(self, hidden: torch.Tensor, num_frames: int, class_embedding: torch.Tensor,
              position_embedding: torch.Tensor) -> torch.Tensor:
        """Branch input at k = 0. hidden (B*T, 1+L, D), position_embedding (1+L, D) -> (B, 1+L*T, D)."""
        bt, s, d = hidden.shape
        h = hidden.reshape(bt // num_frames, num_frames, s, d)  # (B, T, 1+L, D)
        patches = h[:, :, 1:] + position_embedding[1:] + self.time_embed.weight[:num_frames, None]
        cls = (h[:, :, 0].mean(dim=1) + class_embedding + position_embedding[0]) / 2  # (B, D)
        patches = patches.transpose(1, 2).reshape(h.shape[0], -1, d)  # (B, T, L, D) -> (B, L*T, D)
        return torch.cat([cls[:, None], patches], dim=1)

    def forward(self, paired: Sequence[torch.Tensor], num_frames: int, class_embedding: torch.Tensor,
                position_embedding: torch.Tensor) -> torch.Tensor:
        self.check_frames(num_frames)
        if len(paired) != self.config.depth:
            raise ValueError(f"STAN expects {self.config.depth} paired layer outputs, got {len(paired)}")
        x = self.embed(paired[0], num_frames, class_embedding, position_embedding)
        for k, (temporal, spatial) in enumerate(zip(self.temporal_layers, self.spatial_layers)):
            if k > 0:
                x1 = video_tokens(paired[k], num_frames)
                x = x + (self.input_projs[k - 1](x1) if self.input_projs is not None else x1)
            x = self._run(temporal, x, num_frames)
            x = self._run(spatial, x, num_frames)
        return x

    def _run(self, block: nn.Module, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, num_frames, use_reentrant=False)
        return block(x, num_frames)

    def check_frames(self, num_frames: int) -> None:
        """Reject frame counts the temporal embedding cannot represent."""
        if not 1 <= num_frames <= self.config.max_frames:
            raise ValueError(
                f"STAN supports 1..{self.config.max_frames} frames (its temporal embedding size), "
                f"got {num_frames}; sample at most {self.config.max_frames} frames"
            )


def tower_position_embedding(vision: CLIPVisionModel, hidden: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The tower's own position embedding (1+L, D) for a height x width input, interpolated the
    way the tower itself interpolates when the input is not its native size."""
    emb = vision.embeddings
    if (height, width) == (emb.image_size, emb.image_size):
        return emb.position_embedding.weight
    return emb.interpolate_pos_encoding(hidden[:1], height, width)[0]


class VisionTower(ABC):
    """What `run_video_tower` needs from a ViT, in HF layer semantics: `layer(i, x)` runs encoder
    layer (open_clip: resblock) i, so its output is HF's `hidden_states[i + 1]`, and `embed` gives
    `hidden_states[0]` (the input of layer 0, after the pre-norm). `HFVisionTower` wraps a HF CLIP
    tower; `stanchat.cocaclip.OpenCLIPVisionTower` wraps an open_clip one."""

    @property
    @abstractmethod
    def class_embedding(self) -> torch.Tensor:
        """The learned CLS embedding (D,)."""

    @property
    @abstractmethod
    def num_layers(self) -> int:
        """M, the number of encoder layers."""

    @abstractmethod
    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) -> the input of layer 0 (N, 1+L, D)."""

    @abstractmethod
    def layer(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        """Run encoder layer `index` on (N, 1+L, D)."""

    @abstractmethod
    def position_embedding(self, hidden: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The position embedding (1+L, D) the tower used for a height x width input."""


class HFVisionTower(VisionTower):
    """A HF `CLIPVisionModel` seen as a `VisionTower`; calls the tower's own modules."""

    def __init__(self, vision: CLIPVisionModel):
        self.vision = vision

    @property
    def class_embedding(self) -> torch.Tensor:
        return self.vision.embeddings.class_embedding

    @property
    def num_layers(self) -> int:
        return len(self.vision.encoder.layers)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        native = tuple(frames.shape[-2:]) == (self.vision.embeddings.image_size,) * 2
        return self.vision.pre_layrnorm(self.vision.embeddings(frames, interpolate_pos_encoding=not native))

    def layer(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        return self.vision.encoder.layers[index](hidden, None)

    def position_embedding(self, hidden: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return tower_position_embedding(self.vision, hidden, height, width)


def run_video_tower(vision: CLIPVisionModel | VisionTower, stan: STAN | None, pixel_values: torch.Tensor,
                    end: int, views: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the CLIP tower on every frame up to layer `end` and the STAN branch beside it.

    `vision` is a HF CLIP vision tower or any `VisionTower` (e.g. an open_clip one).
    pixel_values (B, T, 3, H, W) -> (CLIP output of layer `end`, (B*T, 1+L, D);
    STAN output, (B, 1+L*T, D), or None when `stan` is None). Layers after `end` are not run.
    The loop calls the tower's own layers, so the CLIP path is bit-identical to the tower's
    `hidden_states[end + 1]`.

    `views` (V, T') shows each clip as V videos of T' frames, view v being frames `views[v]` (e.g.
    the clip played backwards, or one frame held): the outputs are those of the V*B clips, view by
    view ((V*B*T', 1+L, D), (V*B, 1+L*T', D)), while the tower runs once per frame of pixel_values.
    """
    tower = vision if isinstance(vision, VisionTower) else HFVisionTower(vision)
    if pixel_values.dim() != 5 or pixel_values.shape[2] != 3:
        raise ValueError(f"expected pixel_values of shape (B, T, 3, H, W), got {tuple(pixel_values.shape)}")
    if not 0 <= end < tower.num_layers:
        raise ValueError(f"end layer {end} is outside a tower of {tower.num_layers} layers")
    num_clips, num_frames = pixel_values.shape[:2]
    if views is not None:
        num_frames = views.shape[1]
    if stan is not None:
        stan.check_frames(num_frames)
    frames = pixel_values.flatten(0, 1)  # (B, T, 3, H, W) -> (B*T, 3, H, W)
    height, width = frames.shape[-2:]
    hidden = tower.embed(frames)  # (B*T, 1+L, D)
    reads = layers_ending_at(end, stan.config.depth) if stan is not None else range(0)
    paired = []
    for i in range(end + 1):
        hidden = tower.layer(i, hidden)  # (B*T, 1+L, D)
        if i in reads:
            paired.append(_view(hidden, num_clips, views))
    hidden = _view(hidden, num_clips, views)
    if stan is None:
        return hidden, None
    position = tower.position_embedding(hidden, height, width)
    return hidden, stan(paired, num_frames, tower.class_embedding, position)
