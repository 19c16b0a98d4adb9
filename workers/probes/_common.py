"""What every probe starts from: the dataset, the configs, a fresh seeded model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workers.config import ModelConfig, TrainConfig, parse_params
from workers.data import Dataset, load_dataset
from workers.errors import ConfigError
from workers.models import build_model
from workers.request import TrialRequest, TrialResult
from workers.runtime import pick_device, seed_everything


@dataclass
class ProbeSetup:
    data: Dataset
    train: TrainConfig
    arch: ModelConfig
    model: nn.Module
    device: torch.device
    generator: torch.Generator


def prepare(request: TrialRequest, overrides: dict[str, Any] | None = None) -> ProbeSetup:
    task = request.task
    data = load_dataset(task.dataset, task.dataset_options)
    train, arch = parse_params({**task.model_options, **request.params, **(overrides or {})})
    generator = seed_everything(request.seed)
    model = build_model(task.model, data, arch)
    device = pick_device(request.device)
    model.to(device)
    return ProbeSetup(data, train, arch, model, device, generator)


def option(request: TrialRequest, name: str, default: Any, allowed: tuple[str, ...]) -> Any:
    """A probe option, after checking that every given option is one this probe knows."""
    unknown = sorted(set(request.options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{request.mode} has no option {', '.join(repr(u) for u in unknown)}; "
            f"allowed: {', '.join(allowed)}"
        )
    return type(default)(request.options.get(name, default))


def verdict(status: str, message: str, **figures: Any) -> TrialResult:
    return TrialResult(status=status, message=message, probe=figures)
