"""The model registry: a factory takes the dataset's facts and the model knobs."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from stagetune.workers.registry import Registry

# (data, cfg) -> module; a model registered with knobs=K is called (data, cfg, K instance)
ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")
register_model = MODELS.register
