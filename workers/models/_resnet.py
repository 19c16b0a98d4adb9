"""A small CIFAR-style ResNet (He et al. 2016, section 4.2) for images or sequences."""

from __future__ import annotations

import torch
from torch import nn

from stagetune.workers.config import ModelConfig
from stagetune.workers.data import Dataset
from stagetune.workers.models._convnet import spatial_dims_of
from stagetune.workers.models._layers import activation, conv, init_weights, norm
from stagetune.workers.models._registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual shortcut (1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int, dims: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(dims, c_in, c_out, 3, stride=stride, padding=1, bias=False),
            norm(cfg.norm, c_out, dims), activation(cfg.activation),
            conv(dims, c_out, c_out, 3, padding=1, bias=False), norm(cfg.norm, c_out, dims),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                conv(dims, c_in, c_out, 1, stride=stride, bias=False), norm(cfg.norm, c_out, dims)
            )
        self.act = activation(cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """Three stages of `depth` blocks at width, 2x and 4x width; stages 2 and 3 downsample."""

    def __init__(self, data: Dataset, cfg: ModelConfig) -> None:
        super().__init__()
        dims = spatial_dims_of(data, "resnet")
        w = cfg.width
        self.stem = nn.Sequential(
            conv(dims, data.input_shape[0], w, 3, padding=1, bias=False),
            norm(cfg.norm, w, dims), activation(cfg.activation),
        )
        stages, c_in = [], w
        for i, c_out in enumerate((w, 2 * w, 4 * w)):
            blocks = [BasicBlock(c_in if b == 0 else c_out, c_out, 2 if (i and b == 0) else 1,
                                 dims, cfg) for b in range(cfg.depth)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(4 * w, data.num_outputs)

    def transfer_blocks(self) -> list[nn.Module]:
        return [self.stem, *self.stages]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.head(self.dropout(features))


@register_model("resnet")
def resnet(data: Dataset, cfg: ModelConfig) -> nn.Module:
    model = ResNet(data, cfg)
    init_weights(model, cfg)
    return model
