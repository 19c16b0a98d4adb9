"""Shared fixtures, and test-only models registered the way a user's plugin would be."""

from __future__ import annotations

import torch
from torch import nn

from workers.config import ModelConfig
from workers.data import Dataset
from workers.models import MODELS, register_model

# Process-wide registries outlive a test module; register once.
if "scaled_logits_convnet" not in MODELS:

    @register_model("scaled_logits_convnet")
    def scaled_logits_convnet(data: Dataset, cfg: ModelConfig) -> nn.Module:
        """The default convnet with its logits multiplied by 20: a classic init bug."""
        return _Scaled(MODELS.get("convnet")(data, cfg), 20.0)

    @register_model("frozen_convnet")
    def frozen_convnet(data: Dataset, cfg: ModelConfig) -> nn.Module:
        """A convnet whose every weight is frozen: it cannot learn."""
        model = MODELS.get("convnet")(data, cfg)
        model.requires_grad_(False)
        return model


class _Scaled(nn.Module):
    def __init__(self, inner: nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scale
