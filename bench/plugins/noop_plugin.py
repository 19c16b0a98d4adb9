"""A dataset and a model that make a trial do next to no work (bench/dispatch_overhead.py)."""

from __future__ import annotations

import numpy as np
from torch import nn

from stagetune.workers.config import ModelConfig
from stagetune.workers.data import Dataset, DataSettings, RawData, register_dataset
from stagetune.workers.models import register_model


@register_dataset("noop")
def noop(*, settings: DataSettings) -> RawData:
    """20 two-feature samples, two classes: one small batch per epoch."""
    x = np.random.default_rng(0).normal(size=(20, 2)).astype("float32")
    return RawData(x, np.arange(20) % 2, "classification")


@register_model("noop")
def noop_model(data: Dataset, cfg: ModelConfig) -> nn.Module:
    return nn.Linear(2, 2)
