"""The STAN-grafted LLaVA vision features: a video of T frames reaches the projector as one image.

LLaVA (`LlavaModel.get_image_features`) takes `hidden_states[vision_feature_layer]` of its CLIP
tower, drops the CLS under strategy `default` (keeps it under `full`) and projects the tokens into
the LLM. The graft runs the same tower on every frame, stops at that same layer, and runs a STAN
branch (Mug-STAN weights) whose last paired layer is that layer. Per DESIGN.md:

    CLS     = (mean_t CLIP CLS     + STAN CLS)          / 2
    patch_l = (mean_t CLIP patch_l + mean_t STAN patch_l) / 2

laid out `[CLS, patch_1..patch_L]`: L+1 tokens whatever T is; averaging keeps the scale the
projector was trained on. The strategy then drops or keeps the CLS, exactly as for an image.
Two baselines share the code path: `mean` (mean_t CLIP tokens: stock LLaVA image features at T = 1)
and `concat` (every frame's selected tokens in time order, FreeVA-style). `segments` splits the T
frames into S consecutive windows (`stanchat.segments.window_bounds`) and runs `stan` on each: S
images' worth, in time order.

LLaVA-NeXT (`LlavaNextForConditionalGeneration`) is accepted too: a video goes in as one
base-resolution image (the whole frame squashed to the base size, as its processor makes the base
image; no anyres tiles), and its projected tokens are followed by the model's learned
`image_newline`, exactly as LLaVA-NeXT itself packs an image that has only its base features
(`pack_image_features` with one patch): L+1 (+1 with CLS) tokens. Under `concat` every frame is
such an image and gets its own `image_newline`.

Shape letters: B batch, T frames, L patches per frame, D tower width, E LLM width.
"""

from __future__ import annotations

import os
from dataclasses import replace

import torch
from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

from stanchat.architectures import load_video_model
from stanchat.errors import WeightsError
from stanchat.options import check_temporal
from stanchat.segments import window_bounds
from stanchat.stan import STAN, STANConfig, end_layer_for_feature_layer, fuse_frames, run_video_tower
from stanchat.videoclip import VideoCLIP

STRATEGIES = ("default", "full")  # LLaVA's vision_feature_select_strategy values


def place_video(llava, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The LLM's input embeddings with the video placed: each row's N image placeholders take that
    row's N projected video tokens, in order, as LLaVA places an image's features. The one way video
    tokens enter the LLM (the engine, training, benchmarks): `generate`/`forward(inputs_embeds=...)`.
    input_ids (B, S) holding N placeholders per row, features (B, N, E) -> (B, S, E)."""
    embeds = llava.get_input_embeddings()(input_ids)  # (B, S, E)
    placeholders = input_ids == llava.config.image_token_id  # (B, S)
    counts = placeholders.sum(dim=1).tolist()
    if any(count != features.shape[1] for count in counts):
        raise RuntimeError(f"rows hold {counts} video placeholders for {features.shape[1]} video tokens each")
    # (B, S, 1) mask over (B, S, E): row-major order fills each row's placeholders with its tokens in turn
    return embeds.masked_scatter(placeholders[..., None], features.to(embeds.device, embeds.dtype))


def load_graft_model(directory: str | os.PathLike, dtype: torch.dtype | None = None):
    """The saved video-text model whose STAN is grafted onto LLaVA's CLIP tower, by the common
    loader (`load_video_model`); only a VideoCLIP (HF CLIP layers, as LLaVA's tower) can be."""
    model = load_video_model(directory, dtype)
    if not isinstance(model, VideoCLIP):
        raise WeightsError(f"{directory} holds a {type(model).__name__}; the LLaVA graft needs a VideoCLIP (a STAN "
                           f"on HF CLIP layers like LLaVA's tower): pass --stan a VideoCLIP directory")
    return model


def video_token_count(temporal: str, num_frames: int, num_patches: int, strategy: str, newline: bool = False,
                      segments: int = 1) -> int:
    """How many video tokens (and so `<image>` placeholders) the LLM sees. The only place this is
    computed. `stan`/`mean`: one image's worth; `concat`: one per frame; `segments`: one per window.
    `default` drops the CLS; `newline` (LLaVA-NeXT) adds its `image_newline` after each image."""
    check_temporal(temporal)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown vision_feature_select_strategy {strategy!r}; expected one of {STRATEGIES}")
    per_image = num_patches + (1 if strategy == "full" else 0) + (1 if newline else 0)
    images = {"concat": num_frames, "segments": segments}.get(temporal, 1)
    return per_image * images


class Graft:
    """LLaVA's frozen CLIP tower with a STAN branch ending at LLaVA's feature layer.

    Holds references, copies nothing: `llava` (its tower and projector), `stan` (or None: then only
    `mean` and `concat` work), `end` (0-based tower layer LLaVA reads), `stan_config` (the STAN's
    config with `end_layer` re-set to `end`), `strategy`, `newline` (LLaVA-NeXT's `image_newline`
    (E,), or None for LLaVA).
    """

    def __init__(self, llava: LlavaForConditionalGeneration | LlavaNextForConditionalGeneration, stan: STAN | None):
        config = llava.config
        if not isinstance(config.vision_feature_layer, int):
            raise WeightsError(
                f"this LLaVA reads several vision layers {config.vision_feature_layer}; the STAN graft needs "
                f"one (LLaVA-1.5 uses vision_feature_layer=-2)"
            )
        if config.vision_feature_select_strategy not in STRATEGIES:
            raise WeightsError(f"unknown vision_feature_select_strategy {config.vision_feature_select_strategy!r}")
        self.llava = llava
        self.stan = stan
        self.strategy = config.vision_feature_select_strategy
        self.newline = llava.model.image_newline if isinstance(llava, LlavaNextForConditionalGeneration) else None
        vision_config = config.vision_config
        self.patch_size = vision_config.patch_size
        self.end = end_layer_for_feature_layer(config.vision_feature_layer, vision_config.num_hidden_layers)
        self.stan_config: STANConfig | None = None
        if stan is not None:
            self.stan_config = self._check_stan(stan, vision_config)

    def _check_stan(self, stan: STAN, vision_config) -> STANConfig:
        width = stan.time_embed.embedding_dim
        if width != vision_config.hidden_size:
            raise WeightsError(
                f"the STAN branch is {width} wide but LLaVA's vision tower is {vision_config.hidden_size}; "
                f"use a STAN converted for the same CLIP width (e.g. Mug-STAN L/14 for LLaVA-1.5)"
            )
        stan_config = replace(stan.config, end_layer=self.end)
        try:
            stan_config.resolve_end(vision_config.num_hidden_layers)
        except ValueError as err:
            raise WeightsError(f"the STAN branch does not fit LLaVA's tower: {err}") from err
        return stan_config

    @property
    def vision(self):
        """LLaVA's CLIP vision tower (HF `CLIPVisionModel`)."""
        return self.llava.model.vision_tower

    @property
    def max_frames(self) -> int | None:
        """Frames the STAN temporal embedding covers (None without a STAN)."""
        return self.stan_config.max_frames if self.stan_config is not None else None

    def num_patches(self, height: int, width: int) -> int:
        """L: patches per frame for a height x width input."""
        return (height // self.patch_size) * (width // self.patch_size)

    def token_count(self, temporal: str, num_frames: int, height: int, width: int, segments: int = 1) -> int:
        """Video tokens for T frames of height x width pixels (see `video_token_count`)."""
        return video_token_count(temporal, num_frames, self.num_patches(height, width), self.strategy,
                                 newline=self.newline is not None, segments=segments)

    @torch.no_grad()
    def vision_tokens(self, pixel_values: torch.Tensor, temporal: str) -> torch.Tensor:
        """Selected tower-width tokens before the projector.
        pixel_values (B, T, 3, H, W) -> (B, N, D), N = `token_count(temporal, T, H, W)`."""
        check_temporal(temporal)
        if temporal == "stan" and self.stan is None:
            raise WeightsError(lambda w: f"temporal mode 'stan' needs STAN weights; load a STAN or "
                                         f"{w.set('temporal', 'mean')}", param="temporal")
        b, t = pixel_values.shape[:2]
        stan = self.stan if temporal == "stan" else None
        hidden, branch = run_video_tower(self.vision, stan, pixel_values, self.end)  # (B*T, 1+L, D)
        frames = hidden.reshape(b, t, *hidden.shape[1:])  # (B*T, 1+L, D) -> (B, T, 1+L, D)
        if temporal == "concat":
            if self.strategy == "default":
                frames = frames[:, :, 1:]  # drop each frame's CLS, as LLaVA does per image
            return frames.flatten(1, 2)  # (B, T, S, D) -> (B, T*S, D), frames in time order
        if branch is not None:
            frames = fuse_frames(hidden, branch, t)  # (B, T, 1+L, D)
        tokens = frames.mean(dim=1)  # (B, 1+L, D); exact identity at T = 1 without STAN
        return tokens[:, 1:] if self.strategy == "default" else tokens

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor, temporal: str, segments: int = 1) -> torch.Tensor:
        """Projected video features for the LLM. pixel_values (B, T, 3, H, W) -> (B, N, E).
        The token count is checked against `token_count` before anything reaches the LLM.
        `segments`: S windows under temporal `segments`, each its own `stan` image, in time order."""
        b, t, _, height, width = pixel_values.shape
        if temporal == "segments":
            blocks = [self.features(pixel_values[:, a:z], "stan") for a, z in window_bounds(t, segments)]
            return torch.cat(blocks, dim=1)  # S x (B, N1, E) -> (B, S*N1, E), windows in time order
        features = self.llava.model.multi_modal_projector(self.vision_tokens(pixel_values, temporal))
        if self.newline is not None:
            features = self._add_newline(features, t if temporal == "concat" else 1)
        expected = self.token_count(temporal, t, height, width)
        if features.shape[:2] != (b, expected):
            raise RuntimeError(f"graft produced {tuple(features.shape)} features, expected ({b}, {expected}, E)")
        return features

    def _add_newline(self, features: torch.Tensor, images: int) -> torch.Tensor:
        """LLaVA-NeXT's `image_newline` after each of `images` base-only images.
        (B, images*S, E) -> (B, images*(S+1), E)."""
        b, n, e = features.shape
        per_image = features.reshape(b, images, n // images, e)  # (B, images, S, E)
        newline = self.newline.to(features.device, features.dtype).expand(b, images, 1, e)  # (B, images, 1, E)
        return torch.cat([per_image, newline], dim=2).flatten(1, 2)
