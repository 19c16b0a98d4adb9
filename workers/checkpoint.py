"""Checkpoints of a training run: everything the loop needs to go on bit for bit.

A checkpoint is the bytes of one `torch.save` of plain containers and CPU tensors,
so `torch.load(..., weights_only=True)` reads it without unpickling arbitrary objects.
Besides the weights it holds what makes the next epoch the same as in an unbroken
run: optimizer and scheduler state, the batch-order generator, torch's global RNG
(dropout and augmentation draw from it) and the loop's own counters.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from stagetune.workers.errors import ConfigError

FORMAT = 1  # bump when the layout changes, so an old checkpoint is refused clearly


@dataclass
class LoopState:
    """What the training loop carries from one epoch to the next, model aside."""

    epoch: int = 0  # the last finished epoch; 0 = nothing trained yet
    first_loss: float | None = None  # what the divergence check compares against
    best: float = -math.inf  # early stopping: best score so far (higher is better)
    since_best: int = 0


@dataclass(frozen=True)
class RunShape:
    """Facts a checkpoint must share with the run that resumes it."""

    optimizer: str  # the optimizer class: its state means nothing to another one
    steps_per_epoch: int
    horizon: int  # epochs the LR schedule spans
    schedule: str


def dump(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: LRScheduler,
         generator: torch.Generator, state: LoopState, shape: RunShape) -> bytes:
    """The checkpoint after `state.epoch`, as bytes."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "model": _to_cpu(model.state_dict()),
        "optimizer": _to_cpu(optimizer.state_dict()),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "loop": {"epoch": state.epoch, "first_loss": state.first_loss, "best": state.best,
                 "since_best": state.since_best},
        "shape": {"optimizer": shape.optimizer, "steps_per_epoch": shape.steps_per_epoch,
                  "horizon": shape.horizon, "schedule": shape.schedule},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def restore(blob: bytes, model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: LRScheduler, generator: torch.Generator, shape: RunShape) -> LoopState:
    """Load `blob` into the run's objects; a checkpoint of another run raises ConfigError."""
    try:
        payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for bytes it cannot read
        raise ConfigError(f"resume holds no readable checkpoint: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError("resume holds no stagetune checkpoint (or one of another format); "
                          "pass the bytes a run handed to `save`")
    _check_shape(payload["shape"], shape)
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ConfigError(f"the checkpoint does not fit this model: {_first_line(exc)}") from None
    # The schedule's state is restored after the optimizer's: both carry the current lr.
    scheduler.load_state_dict(payload["scheduler"])
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["cpu_rng"])
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return LoopState(**payload["loop"])


def _check_shape(saved: dict[str, Any], shape: RunShape) -> None:
    if saved["optimizer"] != shape.optimizer:
        raise ConfigError(f"the checkpoint does not fit this model: it was taken with optimizer "
                          f"{saved['optimizer']}, this run uses {shape.optimizer}")
    if saved["steps_per_epoch"] != shape.steps_per_epoch:
        raise ConfigError(f"the checkpoint does not fit this model: its epochs had "
                          f"{saved['steps_per_epoch']} steps, this run's have "
                          f"{shape.steps_per_epoch} (same dataset and batch_size needed)")
    if saved["schedule"] != shape.schedule:
        raise ConfigError(f"the checkpoint was taken with schedule {saved['schedule']}, this "
                          f"request uses {shape.schedule}; resume with the same schedule")
    # A constant schedule has no length; any other keeps its horizon in its state, so a
    # different one would be silently ignored.
    if shape.schedule != "constant" and saved["horizon"] != shape.horizon:
        raise ConfigError(f"the checkpoint's LR schedule spans {saved['horizon']} epochs, this "
                          f"request's {shape.horizon}; resume with horizon={saved['horizon']}")


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    # load_state_dict lists every key on its own line; the first few say enough.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:3]) if lines else type(exc).__name__
