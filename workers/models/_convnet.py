"""A plain convolutional network for images (2-D) or sequences (1-D)."""

from __future__ import annotations

import torch
from torch import nn

from stagetune.workers.config import ModelConfig
from stagetune.workers.data import Dataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.models._layers import Skip, activation, conv, init_weights, norm
from stagetune.workers.models._registry import register_model


def spatial_dims_of(data: Dataset, model: str) -> int:
    dims = len(data.input_shape) - 1
    if dims not in (1, 2):
        raise ConfigError(
            f"model '{model}' needs image (C, H, W) or sequence (C, L) inputs, but "
            f"{data.name} gives {data.input_shape}; use model 'mlp'"
        )
    return dims


class ConvNet(nn.Module):
    """A stem, then `depth` conv-norm-activation blocks with the chosen skip connection,
    each followed by pooling while the map is large enough; global average pool; head."""

    def __init__(self, data: Dataset, cfg: ModelConfig) -> None:
        super().__init__()
        dims = spatial_dims_of(data, "convnet")
        padding = cfg.kernel // 2 if cfg.padding is None else cfg.padding
        channels, size = data.input_shape[0], min(data.input_shape[1:])
        self.stem = nn.Sequential(
            conv(dims, channels, cfg.width, cfg.kernel, stride=cfg.stride, padding=padding),
            norm(cfg.norm, cfg.width, dims), activation(cfg.activation),
        )
        size = (size + 2 * padding - cfg.kernel) // cfg.stride + 1
        if size < 1:
            raise ConfigError(
                f"convnet: kernel {cfg.kernel}, stride {cfg.stride} and padding {padding} leave "
                f"no output for inputs of size {min(data.input_shape[1:])}"
            )
        blocks: list[nn.Module] = []
        for _ in range(cfg.depth):
            body = nn.Sequential(
                conv(dims, cfg.width, cfg.width, 3, padding=1, bias=cfg.norm == "none"),
                norm(cfg.norm, cfg.width, dims), activation(cfg.activation),
            )
            stage: list[nn.Module] = [Skip(body, cfg.skip_kind, cfg.width, dims)]
            if cfg.pooling != "none" and size >= 2:
                stage.append(_pool(cfg.pooling, dims))
                size //= 2
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.width, data.num_outputs)

    def transfer_blocks(self) -> list[nn.Module]:
        return [self.stem, *self.blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.blocks(self.stem(x))).flatten(1)
        return self.head(self.dropout(features))


def _pool(kind: str, dims: int) -> nn.Module:
    if kind == "max":
        return nn.MaxPool1d(2) if dims == 1 else nn.MaxPool2d(2)
    return nn.AvgPool1d(2) if dims == 1 else nn.AvgPool2d(2)


@register_model("convnet")
def convnet(data: Dataset, cfg: ModelConfig) -> nn.Module:
    model = ConvNet(data, cfg)
    init_weights(model, cfg)
    return model
