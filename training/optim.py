"""AdamW over four parameter groups and the warmup + cosine schedule.

Groups: CLIP weights at the CLIP lr and the STAN branch at the STAN lr (Mug-STAN trains the new
branch 10x faster than the pretrained tower), each split into decayed weights and parameters that
take no weight decay: norms, biases and embeddings (token, position, class and STAN time
embeddings), which decay would pull towards zero for no regularising benefit.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from training.config import OptimConfig, ScheduleConfig


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of parameters that take no weight decay: every 1-d parameter (biases, norm weights,
    `class_embedding`) and the weights of every `nn.Embedding` and norm layer."""
    names = {name for name, p in model.named_parameters() if p.dim() < 2}
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Embedding, nn.LayerNorm)):
            names.update(f"{module_name}.{n}" if module_name else n for n, _ in module.named_parameters(recurse=False))
    return names


def param_groups(model: nn.Module, config: OptimConfig) -> list[dict]:
    """AdamW groups for a VideoCLIP: clip/stan x decay/no_decay, trainable parameters only.
    Each group carries a `name` for logging; empty groups are left out."""
    skip = no_decay_names(model)
    groups = {key: [] for key in ("clip", "clip_no_decay", "stan", "stan_no_decay")}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "stan" if name.startswith("stan.") else "clip"
        groups[part + ("_no_decay" if name in skip else "")].append(p)
    lrs = {"clip": config.clip_lr, "stan": config.stan_lr}
    return [
        {"name": key, "params": params, "lr": lrs[key.split("_")[0]],
         "weight_decay": 0.0 if key.endswith("no_decay") else config.weight_decay}
        for key, params in groups.items() if params
    ]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with the groups of `param_groups`."""
    groups = param_groups(model, config)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, betas=config.betas, eps=config.eps)


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """lr multiplier at `step` (0-based): linear from 1/warmup to 1 over `warmup` steps, then a
    cosine from 1 down to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig, total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup + cosine over `total_steps` optimizer steps, the same shape for every group."""
    warmup = int(config.warmup * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, warmup, config.min_lr_ratio)
    )
