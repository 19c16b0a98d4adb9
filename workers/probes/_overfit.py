"""Overfit probe: a working pipeline drives the loss on a tiny subset near zero.

It stops at the first of: the loss reaches the target (passed), the loss has
plateaued (see `plateaued`), the step budget or the `max_epochs` cost cap is spent,
or the loss is no longer finite. A model that cannot learn thus costs some thirty
steps, not the whole budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from workers.errors import ConfigError
from workers.models import count_parameters, set_train_mode
from workers.optim import build_optimizer
from workers.probes._common import option, prepare, verdict
from workers.request import TrialRequest, TrialResult
from workers.train import loss_fn

OPTIONS = ("samples", "steps", "target_fraction", "max_epochs")
# Regularisation and augmentation are off: they exist to stop exactly this fit.
NO_REGULARISATION = {"dropout": 0.0, "weight_decay": 0.0, "augment": "none",
                     "label_smoothing": 0.0, "schedule": "constant"}
# 0.1%, not 1%: sigmoid nets without normalisation sit on a saddle near the prior's
# entropy for 30-60 steps, gaining 0.1-0.3% per 25 steps, before their loss falls.
MIN_STEPS, WINDOW, MIN_GAIN = 30, 25, 0.001
WHY = {"plateau": "the loss plateaued", "max_epochs": "the max_epochs cost cap",
       "not_finite": "the loss is not finite", "steps": "the step budget"}
STOP_RULE = (f"after at least {MIN_STEPS} steps, stop once the best loss of the last {WINDOW} "
             f"steps is not {MIN_GAIN:.1%} below the best loss before them")


def plateaued(losses: list[float]) -> bool:
    """Whether the loss stopped falling: the last WINDOW steps' best is no MIN_GAIN better
    than the best before them. Best, not last: Adam's full-batch losses spike now and then."""
    if len(losses) < max(MIN_STEPS, WINDOW + 1):
        return False
    before, recent = min(losses[:-WINDOW]), min(losses[-WINDOW:])
    return not recent < (1 - MIN_GAIN) * before


def overfit(request: TrialRequest) -> TrialResult:
    samples = option(request, "samples", 64, OPTIONS)
    steps = option(request, "steps", 300, OPTIONS)
    fraction = option(request, "target_fraction", 0.02, OPTIONS)
    max_epochs = option(request, "max_epochs", math.inf, OPTIONS)
    if samples < 2 or steps < 1 or max_epochs <= 0:
        raise ConfigError(f"overfit needs samples >= 2, steps >= 1 and max_epochs > 0 "
                          f"(got {samples}, {steps}, {max_epochs})")
    setup = prepare(request, NO_REGULARISATION)
    data, model = setup.data, setup.model
    x, y = data.sample("train", samples)  # the first items: a split is in random order
    x, y = x.to(setup.device), y.to(setup.device)
    n_train = data.train_size
    target = fraction * data.expected_initial_loss
    budget = steps
    if not math.isinf(max_epochs):  # each full-batch step costs len(x) / n_train epochs
        budget = min(steps, max(1, int(max_epochs * n_train / len(x))))
    try:
        optimizer = build_optimizer(model, setup.train, setup.arch)
    except ConfigError as exc:  # nothing trainable: the probe's answer, not an input error
        result = verdict("failed", f"The model cannot learn: {exc}.", losses=[], target_loss=target,
                         steps=0, epochs_equivalent=0.0, stop_rule=STOP_RULE, stopped_by="frozen",
                         stopped_early=True)
        result.parameters = count_parameters(model)
        return result

    losses, stopped_by = _fit(model, optimizer, loss_fn(data), x, y, target, budget)
    if stopped_by == "budget":
        stopped_by = "steps" if budget == steps else "max_epochs"
    result = _judge(losses, target, len(x), steps, stopped_by)
    result.probe |= {"target_loss": target, "samples": len(x), "steps": len(losses),
                     "epochs_equivalent": len(losses) * len(x) / n_train, "stop_rule": STOP_RULE,
                     "stopped_by": stopped_by, "stopped_early": len(losses) < steps,
                     "plateau_at": len(losses) if stopped_by == "plateau" else None}
    result.parameters = count_parameters(model)
    return result


def _fit(model: nn.Module, optimizer: torch.optim.Optimizer,
         criterion: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor,
         target: float, budget: int) -> tuple[list[float], str]:
    """Full-batch steps on the subset until a stop condition holds; the losses and why."""
    set_train_mode(model)
    losses: list[float] = []
    for _ in range(budget):
        loss = criterion(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            return losses, "not_finite"
        if losses[-1] <= target:
            return losses, "target"
        if plateaued(losses):
            return losses, "plateau"
    return losses, "budget"


def _judge(losses: list[float], target: float, samples: int, steps: int,
           stopped_by: str) -> TrialResult:
    finite = [v for v in losses if math.isfinite(v)]
    first, best = losses[0], min(finite, default=math.inf)
    ran = len(losses)
    if best <= target:
        return verdict("passed", f"The loss on {samples} samples fell from {first:.3g} to "
                       f"{best:.3g} in {ran} steps: the pipeline can learn.", losses=losses)
    stop = "" if ran == steps else f" (stopped after {ran} of {steps} steps: {WHY[stopped_by]})"
    if best <= 0.2 * first:
        return verdict("warned", f"The loss on {samples} samples fell from {first:.3g} to "
                       f"{best:.3g} but not below {target:.3g}{stop}: give it more steps, a "
                       "larger learning rate or more capacity.", losses=losses)
    return verdict("failed", f"The loss on {samples} samples stayed near {first:.3g} (best "
                   f"{best:.3g}) over {ran} steps{stop}: the model cannot fit even a tiny subset. "
                   "Check the learning rate, frozen weights, the loss and the labels.",
                   losses=losses)
