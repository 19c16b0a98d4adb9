"""Model registry: `register_model` to add one, `build_model` to make one for a dataset."""

from __future__ import annotations

from pydantic import BaseModel
from torch import nn

from stagetune.workers.config import ModelConfig
from stagetune.workers.data import AnyDataset
from stagetune.workers.models import _convnet, _mlp, _resnet, _timm, _torchvision  # noqa: F401  (fill the registry)
from stagetune.workers.models._registry import MODELS, ModelFactory, register_model
from stagetune.workers.models._timm import timm_architectures
from stagetune.workers.models._torchvision import architectures
from stagetune.workers.models._transfer import (
    apply_transfer,
    body_blocks,
    parameter_groups,
    set_train_mode,
)


def build_model(name: str, data: AnyDataset, cfg: ModelConfig,
                knobs: BaseModel | None = None) -> nn.Module:
    """Build model `name` for `data`, then load weights and apply the transfer strategy.
    A model registered with knobs gets their values (`knobs`) as its third argument."""
    entry = MODELS.entry(name)
    if entry.knobs is not None:
        model = entry.factory(data, cfg, knobs if knobs is not None else entry.knobs())
    else:
        model = entry.factory(data, cfg)
    apply_transfer(model, cfg, data.num_outputs)
    return model


def count_parameters(model: nn.Module) -> int:
    """Every parameter, frozen ones included: the model's size, not what is trained."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "MODELS",
    "ModelFactory",
    "architectures",
    "body_blocks",
    "build_model",
    "count_parameters",
    "parameter_groups",
    "register_model",
    "set_train_mode",
    "timm_architectures",
]
