"""Optimizer and learning-rate schedule (docs/design.md section 4).

AdamW with weight decay on matrices only: norms, biases and the (tied) embedding
are excluded. The schedule is a linear warmup followed by a cosine decay to
``min_lr_ratio * lr`` at ``max_steps``.

>>> lr_multiplier(0, warmup_steps=10, max_steps=100)
0.1
>>> lr_multiplier(10, warmup_steps=10, max_steps=100)
1.0
>>> round(lr_multiplier(100, warmup_steps=10, max_steps=100, min_lr_ratio=0.1), 6)
0.1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn


@dataclass
class OptimConfig:
    lr: float = 3e-5
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    fused: bool | None = None  # None: fused AdamW on CUDA, the default kernel elsewhere


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters into a decayed group (weights of linear layers) and the rest.

    Chosen by module type, not by ``param.dim()``: under FSDP (``use_orig_params``)
    every parameter is a flat 1-D view of its shard, so a shape rule would silently
    turn weight decay off. The embedding is excluded (docs/design.md section 4): with tied weights
    the output head shares it, and decaying it pulls rare-token rows towards zero.

    >>> from torch import nn
    >>> groups = parameter_groups(nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3)), 0.1)
    >>> [len(g["params"]) for g in groups]  # linear weight | linear bias, norm weight and bias
    [1, 3]
    """
    embedding_params = {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    linear_weights = {
        id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)
    } - embedding_params
    decay, no_decay = [], []
    seen: set[int] = set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (decay if id(param) in linear_weights else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_multiplier(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr_ratio
    decay_steps = max(1, max_steps - warmup_steps)
    progress = (step - warmup_steps) / decay_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * cosine


def build_optimizer(model: nn.Module, cfg: OptimConfig, max_steps: int):
    """AdamW + LambdaLR for ``model``; returns ``(optimizer, scheduler)``."""
    fused = cfg.fused
    if fused is None:
        fused = any(p.is_cuda for p in model.parameters())
    optimizer = torch.optim.AdamW(
        parameter_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        fused=bool(fused),
    )
    schedule = partial(
        lr_multiplier,
        warmup_steps=cfg.warmup_steps,
        max_steps=max_steps,
        min_lr_ratio=cfg.min_lr_ratio,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return optimizer, scheduler
