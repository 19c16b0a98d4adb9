"""The loss registry: built-in losses by name, and a plugin's own."""

from __future__ import annotations

from collections.abc import Callable

import torch

from workers.registry import Registry

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: Registry[Callable[..., LossFunction]] = Registry("loss")
register_loss = LOSSES.register
