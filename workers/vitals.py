"""A training run's vital signs, read while it trains: whether its loss moves, whether its
gradients vanish or explode, whether its rectifiers have died.

A search trial whose signs say it is hopeless is stopped once, after `CHECK_STEPS` steps
(within the first epoch on most datasets), long before an accuracy pruner could tell: that
needs a rung's validation score, a whole epoch at least. The rule:

- the training loss fell less than `FLAT` (2%) from the first `WINDOW` steps to the last
  `WINDOW` before the check, or rose: hopeless, whatever else the signs say;
- it fell less than `SLOW` (10%) and a sign confirms it: the first weight layer's
  gradient is under `VANISHED` of the last one's (vanishing), the gradient norm grew
  `EXPLODED` times since the first step (exploding), or `DEAD` of some rectifier's units
  gave zero for every sample of the check's batch (dead units): hopeless.

The reason names the sign, so the user learns why the trial stopped, not only that it did.
The check costs one forward with hooks and one sync of the gradient norms, once per run;
the loss windows are summed on the device with no sync.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stagetune.workers.config import TrainConfig
from stagetune.workers.probes._causes import START_LR
from stagetune.workers.probes._signals import LAYERS, Record, recording

CHECK_STEPS = 50  # the check's step; sooner, half-way through the first epoch, if that is
# longer than 2 windows
WINDOW = 10  # steps averaged at each end: a single batch's loss is too noisy
FLAT = 0.02
SLOW = 0.10
VANISHED = 1e-5
EXPLODED = 1e3
DEAD = 0.9


def check_step(train: TrainConfig, steps_per_epoch: int) -> int | None:
    """The step (counted from 1) after which the signs are read; None: never (one_cycle's
    rising lr, or a run too short to tell a trend from noise)."""
    if train.schedule == "one_cycle":  # its lr climbs for 30% of the run: a slow start is planned
        return None
    warm = round(train.warmup_epochs * steps_per_epoch) if train.schedule == "warmup_cosine" else 0
    return warm + min(CHECK_STEPS, max(steps_per_epoch // 2, 2 * WINDOW))


class Vitals:
    """Fed every step of a fresh run; `reason()` after the check step says whether it is
    hopeless, and why."""

    def __init__(self, model: nn.Module, train: TrainConfig, at: int) -> None:
        self.model, self.train, self.at = model, train, at
        self.step = 0  # steps done
        self._early = torch.zeros(())
        self._late = torch.zeros(())
        self._first_norm: float | None = None
        self._norm, self._layers = 0.0, list[tuple[str, float]]()
        self._record: Record | None = None
        self._hooks: recording | None = None

    @property
    def checking(self) -> bool:
        """Whether the coming step is the check's (its forward is recorded)."""
        return self.step + 1 == self.at

    def before_forward(self) -> None:
        if self.checking:
            self._hooks = recording(self.model)
            self._record = self._hooks.__enter__()
            self._record.new_forward()

    def after_forward(self) -> None:
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None

    def after_backward(self, loss: torch.Tensor) -> None:
        """Count the step's loss into its window; on the first step and the check's, read
        the gradients (a sync each)."""
        self.step += 1
        value = loss.detach().float()
        if self.step <= WINDOW:
            self._early = self._early.to(value.device) + value
        if self.at - WINDOW < self.step <= self.at:
            self._late = self._late.to(value.device) + value
        if self.step == 1:
            self._first_norm = _total_norm(self.model)
        if self.step == self.at:
            self._norm, self._layers = _total_norm(self.model), _layer_norms(self.model)

    @property
    def due(self) -> bool:
        return self.step == self.at

    def reason(self) -> str | None:
        """At the check step: why the run is hopeless, or None while it learns."""
        early = float(self._early) / WINDOW
        late = float(self._late) / WINDOW
        if not (math.isfinite(early) and math.isfinite(late)) or early <= 1e-8:
            return None  # a diverged loss is the divergence check's; a zero one learnt
        fall = (early - late) / early
        moved = f"the training loss went from {early:.3g} to {late:.3g} in {self.at} steps"
        sign = self._sign()
        if fall < FLAT:
            return f"hopeless: {moved} ({_change(fall)}); {sign or self._lr_advice(fall)}"
        if fall < SLOW and sign:
            return f"hopeless: {moved} ({_change(fall)}); {sign}"
        return None

    def _lr_advice(self, fall: float) -> str:
        """No sign names a cause: the lr against the optimizer's usual start."""
        lr, optimizer = self.train.lr, self.train.optimizer
        usual = START_LR.get(optimizer, 1e-3)
        if lr <= usual / 10:
            return f"lr {lr:g} is likely too low for {optimizer} (it usually starts near {usual:g})"
        if fall < -FLAT or lr >= 10 * usual:
            return f"lr {lr:g} is likely too high for {optimizer} (it usually starts near {usual:g})"
        return (f"lr {lr:g} is usual for {optimizer}, yet the model learns nothing: check the "
                "labels, the inputs and the model's output")

    def _sign(self) -> str | None:
        norm, first = self._norm, self._first_norm or 0.0
        if math.isfinite(norm) and first > 0 and norm > EXPLODED * first:
            return (f"exploding gradients: the gradient norm grew {norm / first:.3g}x since "
                    "the first step; lower lr or set grad_clip")
        if len(self._layers) >= 2:
            (first_name, low), (_, high) = self._layers[0], self._layers[-1]
            if high > 0 and low < VANISHED * high:
                return (f"vanishing gradients: the first layer ({first_name})'s gradient is "
                        f"{low / high:.2g} of the last one's; use relu, norm: batch or a "
                        "shallower net")
        shares = self._record.dead_share() if self._record is not None else {}
        dead = max(shares.items(), key=lambda kv: kv[1], default=None)
        if dead is not None and dead[1] >= DEAD:
            return (f"dead units: {dead[1]:.0%} of {dead[0]}'s ReLU units gave zero for "
                    "every sample; lower lr, or use init: kaiming")
        return None


def _change(fall: float) -> str:
    return f"rose {-fall:.1%}" if fall < 0 else f"fell {fall:.1%}"


def _total_norm(model: nn.Module) -> float:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads, foreach=True)) if grads else 0.0


def _layer_norms(model: nn.Module) -> list[tuple[str, float]]:
    """The weight gradient norm of every weight layer, in forward order (as registered)."""
    return [(name, float(module.weight.grad.norm()))
            for name, module in model.named_modules()
            if isinstance(module, LAYERS) and module.weight.grad is not None]
