"""What every probe starts from: the dataset, the configs, a fresh seeded model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stagetune.workers.config import ModelConfig, TrainConfig
from stagetune.workers.data import AnyDataset, load_dataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.knobs import parse_task_params
from stagetune.workers.models import build_model
from stagetune.workers.request import TrialRequest, TrialResult
from stagetune.workers.runtime import pick_device, seed_everything


@dataclass
class ProbeSetup:
    data: AnyDataset  # probes read it through `data.sample`, alike for both kinds
    train: TrainConfig
    arch: ModelConfig
    model: nn.Module
    device: torch.device
    generator: torch.Generator


def prepare(request: TrialRequest, overrides: dict[str, Any] | None = None) -> ProbeSetup:
    task = request.task
    knobs = parse_task_params(task, {**request.params, **(overrides or {})})
    train, arch = knobs.train, knobs.model
    data = load_dataset(task.needs("dataset"), knobs.dataset_options)
    generator = seed_everything(request.seed)
    model = build_model(task.needs("model"), data, arch, knobs.declared.get("model"))
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
