"""Any torchvision classification architecture, built untrained (never from a hub)."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from stagetune.workers.config import ModelConfig
from stagetune.workers.data import Dataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.models._registry import register_model


def architectures() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


class TorchvisionModel(nn.Module):
    """A torchvision network behind a channel adapter, so grey images work too."""

    def __init__(self, net: nn.Module, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.net = net

    def transfer_blocks(self) -> list[nn.Module]:
        return [m for m in self.net.children() if any(True for _ in m.parameters())]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels == 1:
            x = x.expand(-1, 3, *x.shape[2:])
        return self.net(x)


@register_model("torchvision")
def torchvision_model(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """`arch` names the architecture (resnet18, mobilenet_v3_small, ...)."""
    names = architectures()
    if cfg.arch not in names:
        raise ConfigError(f"unknown torchvision arch '{cfg.arch}'; available: {', '.join(names)}")
    if len(data.input_shape) != 3 or data.input_shape[0] not in (1, 3):
        raise ConfigError(
            f"torchvision models need grey or RGB images, but {data.name} gives "
            f"{data.input_shape}; use model 'mlp' or 'convnet'"
        )
    net = torchvision.models.get_model(cfg.arch, weights=None, num_classes=data.num_outputs)
    return TorchvisionModel(net, data.input_shape[0])
