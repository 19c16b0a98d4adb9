"""A multilayer perceptron over flattened inputs."""

from __future__ import annotations

import math

import torch
from torch import nn

from stagetune.workers.config import ModelConfig
from stagetune.workers.data import Dataset
from stagetune.workers.models._layers import Skip, activation, init_weights, norm
from stagetune.workers.models._registry import register_model


class MLP(nn.Module):
    """`depth` hidden layers of `width` units (linear, norm, activation, dropout)."""

    def __init__(self, in_features: int, outputs: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Flatten(), *_layer(in_features, cfg))
        self.blocks = nn.Sequential(
            *(Skip(nn.Sequential(*_layer(cfg.width, cfg)), cfg.skip_kind, cfg.width, 0)
              for _ in range(cfg.depth - 1))
        )
        self.head = nn.Linear(cfg.width, outputs)

    def transfer_blocks(self) -> list[nn.Module]:
        return [self.stem, *self.blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def _layer(features_in: int, cfg: ModelConfig) -> list[nn.Module]:
    return [nn.Linear(features_in, cfg.width), norm(cfg.norm, cfg.width, 0),
            activation(cfg.activation), nn.Dropout(cfg.dropout)]


@register_model("mlp")
def mlp(data: Dataset, cfg: ModelConfig) -> nn.Module:
    model = MLP(math.prod(data.input_shape), data.num_outputs, cfg)
    init_weights(model, cfg)
    return model
