"""Optimizers and learning-rate schedules, all from torch.optim."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from stagetune.workers.config import ModelConfig, TrainConfig
from stagetune.workers.errors import ConfigError
from stagetune.workers.models import parameter_groups


def build_optimizer(model: nn.Module, train: TrainConfig, arch: ModelConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, train.lr, train.weight_decay, arch.layer_lr_decay)
    if not groups:
        raise ConfigError("the model has no trainable parameters: every weight is frozen")
    name = train.optimizer
    if name in ("sgd", "sgd_nesterov"):
        return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum,
                               nesterov=name == "sgd_nesterov" and train.momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=train.lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=train.lr)
    return torch.optim.RMSprop(groups, lr=train.lr, momentum=train.momentum)


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainConfig, steps_per_epoch: int, epochs: int
) -> lr_scheduler.LRScheduler:
    """A per-step schedule over `epochs`; warmup_epochs applies to warmup_cosine."""
    total = max(steps_per_epoch * epochs, 1)
    kind = train.schedule
    if kind == "constant":
        return lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    if kind == "step":  # divide by 10 at a third and two thirds of the run
        milestones = sorted({max(total // 3, 1), max(2 * total // 3, 1)})
        return lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    if kind == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if kind == "warmup_cosine":
        warm = min(max(round(train.warmup_epochs * steps_per_epoch), 1), total - 1)
        if warm < 1:
            return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return lr_scheduler.SequentialLR(optimizer, [
            lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warm),
            lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warm),
        ], milestones=[warm])
    max_lr: Any = [g["lr"] for g in optimizer.param_groups]
    return lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total)
