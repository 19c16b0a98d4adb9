"""What a forward and backward pass show about a model before it trains: activation
scale per layer, units a ReLU never turns on, whether the outputs are already
probabilities, and whether any gradient reaches the weights.

Hooks only; the probes run their own passes and read the record afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
RECTIFIERS = (nn.ReLU, nn.ReLU6)  # outputs exactly zero when off: a unit can be dead
SUM_TOLERANCE = 1e-3  # a row of probabilities sums to 1 within this


@dataclass
class Record:
    """Filled by `recording`: per weight layer the activation std (the last batch's),
    per rectifier (and per call, for one reused in a forward) whether each unit was on
    for any sample of any batch."""

    activation_std: dict[str, float] = field(default_factory=dict)
    # per weight layer, its outputs' std across the samples of the batch, averaged over
    # units (the last batch's): zero where every sample gets the same output
    sample_spread: dict[str, float] = field(default_factory=dict)
    alive: dict[str, torch.Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def dead_share(self) -> dict[str, float]:
        """Per rectifier, the share of its units that were off for every sample."""
        return {name: float(1.0 - on.float().mean()) for name, on in self.alive.items()}

    def first_layer(self) -> tuple[str, float] | None:
        return next(iter(self.activation_std.items()), None)

    def new_forward(self) -> None:
        self.calls.clear()


class recording:  # lower case: used as a context manager, like torch.no_grad
    """Hooks on `model`'s weight layers and rectifiers for as long as the block runs;
    call `record.new_forward()` before each forward so a reused module is told apart."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.record = model, Record()
        self._hooks: list[Any] = []

    def __enter__(self) -> Record:
        for name, module in self.model.named_modules():
            if isinstance(module, LAYERS):
                self._hooks.append(module.register_forward_hook(self._std(name)))
            elif isinstance(module, RECTIFIERS):
                self._hooks.append(module.register_forward_hook(self._on(name)))
        return self.record

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()

    def _std(self, name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            values = out.detach().float()
            self.record.activation_std[name] = float(values.std())
            if len(values) > 1:
                self.record.sample_spread[name] = float(values.std(0).mean())
        return hook

    def _on(self, name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            if not isinstance(out, torch.Tensor) or out.ndim < 2:
                return
            calls = self.record.calls
            key = name if not calls.get(name) else f"{name}#{calls[name] + 1}"
            calls[name] = calls.get(name, 0) + 1
            on = (out.detach() > 0).transpose(0, 1).reshape(out.shape[1], -1).any(1).cpu()
            seen = self.record.alive.get(key)
            self.record.alive[key] = on if seen is None or seen.shape != on.shape else seen | on
        return hook


def are_probabilities(out: torch.Tensor, loss: str) -> bool:
    """Whether outputs that the loss takes as logits look like probabilities already:
    rows in [0, 1] summing to 1 (softmax) for cross-entropy, every value in [0, 1]
    (sigmoid) for binary cross-entropy with logits."""
    out = out.detach().float()
    if out.ndim < 2 or out.shape[1] < 2 or out.numel() < 4:
        return False
    in_unit = bool(((out >= 0) & (out <= 1)).all())
    if loss == "cross_entropy":
        sums = out.sum(1)
        return in_unit and bool(((sums - 1).abs() <= SUM_TOLERANCE).all())
    if loss == "bce_with_logits":
        return in_unit
    return False


def gradient_state(model: nn.Module) -> tuple[int, int]:
    """(parameters that require grad, of those the ones whose gradient is not all zero)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    moving = sum(1 for p in trainable if p.grad is not None and bool(p.grad.abs().sum() > 0))
    return len(trainable), moving
