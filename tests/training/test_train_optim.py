"""Parameter groups (CLIP lr / STAN lr, no decay on norms, biases, embeddings), frozen parts, and the
warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from stanchat.stan import STANConfig
from stanchat.videoclip import VideoCLIP
from tests.tiny import tiny_clip
from training.config import OptimConfig, ScheduleConfig
from training.model import set_trainable
from training.optim import build_optimizer, build_scheduler, no_decay_names, param_groups, warmup_cosine


def tiny_videoclip(end_layer: int = -1) -> VideoCLIP:
    return VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2, end_layer=end_layer))


def group_of(groups: list[dict], model, name: str) -> str | None:
    param = dict(model.named_parameters())[name]
    found = [g["name"] for g in groups if any(p is param for p in g["params"])]
    assert len(found) <= 1
    return found[0] if found else None


def test_groups_split_clip_and_stan_and_decay():
    model = tiny_videoclip()
    set_trainable(model, freeze_clip=False, freeze_text=False)
    config = OptimConfig(clip_lr=2e-6, stan_lr=2e-5, weight_decay=0.2)
    groups = param_groups(model, config)
    by_name = {g["name"]: g for g in groups}
    assert {k: (g["lr"], g["weight_decay"]) for k, g in by_name.items()} == {
        "clip": (2e-6, 0.2), "clip_no_decay": (2e-6, 0.0), "stan": (2e-5, 0.2), "stan_no_decay": (2e-5, 0.0)}
    expected = {
        "clip.vision_model.encoder.layers.0.self_attn.q_proj.weight": "clip",
        "clip.vision_model.encoder.layers.0.self_attn.q_proj.bias": "clip_no_decay",
        "clip.vision_model.encoder.layers.0.layer_norm1.weight": "clip_no_decay",
        "clip.vision_model.embeddings.class_embedding": "clip_no_decay",
        "clip.vision_model.embeddings.position_embedding.weight": "clip_no_decay",
        "clip.text_model.embeddings.token_embedding.weight": "clip_no_decay",
        "clip.visual_projection.weight": "clip",
        "stan.time_embed.weight": "stan_no_decay",
        "stan.temporal_layers.0.temporal_fc.weight": "stan",
        "stan.temporal_layers.0.temporal_fc.bias": "stan_no_decay",
        "stan.spatial_layers.1.mlp.fc1.weight": "stan",
        "stan.spatial_layers.1.layer_norm2.weight": "stan_no_decay",
        "clip.logit_scale": None,  # tau stays 100: never optimised
    }
    assert {name: group_of(groups, model, name) for name in expected} == expected
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert sum(len(g["params"]) for g in groups) == len(trainable)  # each trainable parameter once


def test_no_decay_covers_every_1d_parameter():
    model = tiny_videoclip()
    skip = no_decay_names(model)
    assert all(name in skip for name, p in model.named_parameters() if p.dim() < 2)


def test_frozen_clip_leaves_only_stan_groups():
    model = tiny_videoclip()
    set_trainable(model, freeze_clip=True, freeze_text=False)
    groups = param_groups(model, OptimConfig())
    assert [g["name"] for g in groups] == ["stan", "stan_no_decay"]
    assert all(not p.requires_grad for p in model.clip.parameters())


def test_early_end_layer_keeps_the_whole_tower_trainable():
    # STAN pairs layers 1-2 of the 4-layer tower; layer 3 still feeds CLIP's own CLS, so it trains
    model = tiny_videoclip(end_layer=-2)
    set_trainable(model, freeze_clip=False, freeze_text=True)
    layers = model.clip.vision_model.encoder.layers
    assert all(p.requires_grad for layer in layers for p in layer.parameters())
    assert not any(p.requires_grad for p in model.clip.text_model.parameters())
    assert not model.clip.text_projection.weight.requires_grad


def test_warmup_then_cosine():
    total, warmup = 20, 4
    lrs = [warmup_cosine(s, total, warmup, 0.1) for s in range(total)]
    assert lrs[:warmup] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[warmup] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))  # strictly decaying after warmup
    assert warmup_cosine(total, total, warmup, 0.1) == pytest.approx(0.1)
    mid = warmup + (total - warmup) // 2
    assert lrs[mid] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_scheduler_drives_every_group():
    model = tiny_videoclip()
    set_trainable(model, freeze_clip=False, freeze_text=False)
    optimizer = build_optimizer(model, OptimConfig(clip_lr=1e-6, stan_lr=1e-5))
    scheduler = build_scheduler(optimizer, ScheduleConfig(warmup=0.5), total_steps=4)
    seen = []
    for _ in range(4):
        seen.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        optimizer.step()
        scheduler.step()
    # warmup 2 steps (0.5, 1.0), then the cosine from its top: 1.0 at step 2, 0.5 half-way at step 3
    assert [s["clip"] for s in seen] == pytest.approx([0.5e-6, 1e-6, 1e-6, 0.5e-6])
    assert all(s["stan"] == pytest.approx(10 * s["clip"]) for s in seen)
    assert isinstance(optimizer, torch.optim.AdamW)
