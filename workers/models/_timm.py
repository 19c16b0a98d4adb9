"""Any timm architecture by name, built untrained; weights come from a local file only
(the `weights` knob), never from a hub."""

from __future__ import annotations

import functools

import torch
from torch import nn

from stagetune.workers.config import ModelConfig
from stagetune.workers.data import Dataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.models._registry import register_model


@functools.cache
def timm_architectures() -> tuple[str, ...]:
    import timm  # about a second to import: only when a timm model is asked for

    return tuple(timm.list_models())


class TimmModel(nn.Module):
    """A timm network; `transfer_blocks` follows its stages, so discriminative learning
    rates and top_blocks work as with torchvision's."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def transfer_blocks(self) -> list[nn.Module]:
        return [m for m in self.net.children() if any(True for _ in m.parameters())]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model("timm")
def timm_model(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """`arch` names a timm architecture (resnet18, efficientnet_b0, convnext_atto, ...)."""
    import timm

    if cfg.arch not in timm_architectures():
        raise ConfigError(f"unknown timm arch '{cfg.arch}'; see timm.list_models() for the "
                          f"{len(timm_architectures())} names, e.g. resnet18, efficientnet_b0")
    if len(data.input_shape) != 3:
        raise ConfigError(f"timm models take images (channels, height, width), but {data.name} "
                          f"gives {data.input_shape}; use model 'mlp' or 'convnet'")
    try:
        net = timm.create_model(cfg.arch, pretrained=False, num_classes=data.num_outputs,
                                in_chans=data.input_shape[0], drop_rate=cfg.dropout)
    except (TypeError, ValueError, RuntimeError) as exc:  # e.g. a fixed image size
        raise ConfigError(f"timm cannot build '{cfg.arch}' for input {data.input_shape}: "
                          f"{str(exc).splitlines()[0][:200]}") from None
    return TimmModel(net)
