"""The metric registry: validation metrics by name, computed with torchmetrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workers.registry import Registry

METRICS: Registry[Callable[..., Any]] = Registry("metric")
register_metric = METRICS.register
