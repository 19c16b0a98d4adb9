"""Building blocks shared by the built-in models: norms, activations, skips, init."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from stagetune.workers.config import ModelConfig
from stagetune.workers.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def norm(kind: str, channels: int, spatial_dims: int) -> nn.Module:
    """A normalisation layer for `channels` features over 0 (vectors), 1 or 2 spatial dims."""
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return (nn.BatchNorm1d if spatial_dims <= 1 else nn.BatchNorm2d)(channels)
    if kind == "layer":
        # Over channels and positions, as GroupNorm(1, C) computes; LayerNorm for vectors.
        return nn.LayerNorm(channels) if spatial_dims == 0 else nn.GroupNorm(1, channels)
    if kind == "group":
        groups = math.gcd(channels, 8)
        return nn.GroupNorm(groups, channels)
    if kind == "instance":
        if spatial_dims == 0:
            raise ConfigError("norm 'instance' needs image or sequence inputs; "
                              "use batch, layer, group or none for this model")
        return (nn.InstanceNorm1d if spatial_dims == 1 else nn.InstanceNorm2d)(
            channels, affine=True)
    raise ConfigError(f"unknown norm '{kind}'; use batch, layer, group, instance or none")


def conv(spatial_dims: int, *args: int, **kwargs: int | bool) -> nn.Module:
    return (nn.Conv1d if spatial_dims == 1 else nn.Conv2d)(*args, **kwargs)  # type: ignore[arg-type]


def pointwise(spatial_dims: int, channels_in: int, channels_out: int) -> nn.Module:
    """A 1x1 convolution, or a linear layer for vectors: what skips use to mix channels."""
    if spatial_dims == 0:
        return nn.Linear(channels_in, channels_out)
    return conv(spatial_dims, channels_in, channels_out, 1)


class Skip(nn.Module):
    """Wraps a shape-preserving body with a skip connection.

    residual: x + f(x); highway: t*f(x) + (1-t)*x with a learned gate t, biased
    towards carrying x at init; dense: [x, f(x)] concatenated, then mixed back to
    the width by a 1x1 layer (a DenseNet transition).
    """

    def __init__(self, body: nn.Module, kind: str, channels: int, spatial_dims: int) -> None:
        super().__init__()
        self.body, self.kind = body, kind
        if kind == "highway":
            self.gate = pointwise(spatial_dims, channels, channels)
            nn.init.constant_(self.gate.bias, -1.0)  # type: ignore[arg-type]
        elif kind == "dense":
            self.mix = pointwise(spatial_dims, 2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.kind == "residual":
            return x + out
        if self.kind == "highway":
            t = torch.sigmoid(self.gate(x))
            return t * out + (1 - t) * x
        if self.kind == "dense":
            return self.mix(torch.cat([x, out], dim=1))
        return out


def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """Apply the init scheme to every conv and linear layer; 'default' keeps PyTorch's."""
    if cfg.init == "default":
        return
    nonlinearity: Literal["relu", "leaky_relu"] = (
        "leaky_relu" if cfg.activation == "leaky_relu" else "relu")
    gain = nn.init.calculate_gain(
        cfg.activation if cfg.activation in ("relu", "tanh", "sigmoid", "leaky_relu") else "relu"  # type: ignore[arg-type]
    )
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            continue
        if cfg.init == "xavier":
            nn.init.xavier_uniform_(module.weight, gain=gain)
        elif cfg.init == "kaiming":
            nn.init.kaiming_normal_(module.weight, nonlinearity=nonlinearity)
        elif cfg.init == "orthogonal":
            nn.init.orthogonal_(module.weight, gain=gain)
        if module.bias is not None and not _is_highway_gate(model, module):
            nn.init.zeros_(module.bias)


def _is_highway_gate(model: nn.Module, module: nn.Module) -> bool:
    return any(isinstance(m, Skip) and getattr(m, "gate", None) is module for m in model.modules())
