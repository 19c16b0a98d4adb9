"""An example plugin: a model registered with the decorator the built-in models use.

docker compose mounts this folder at /plugins (STAGETUNE_PLUGINS_DIR); list the module
in STAGETUNE_PLUGINS (`STAGETUNE_PLUGINS=example_plugin` in .env) and every process
that validates or runs a study imports it. Copy it to start your own.
"""

from __future__ import annotations

import math

from torch import nn

from stagetune.workers.config import ModelConfig
from stagetune.workers.data import Dataset
from stagetune.workers.models import register_model


@register_model("linear_softmax")
def linear_softmax(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """Multinomial logistic regression: the inputs flattened, one linear layer. The
    network counterpart of the baseline stage's linear model."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data.input_shape), data.num_outputs))
