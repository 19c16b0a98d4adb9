"""Overfit probe: a working pipeline drives the loss on a tiny subset near zero.

It stops at the first of: the loss reaches the target (passed), the loss has
plateaued (see `plateaued`), the loss has not moved at all in STILL_STEPS steps, the step
budget or the `max_epochs` cost cap is spent,
or the loss is no longer finite. A model that cannot learn thus costs some thirty
steps, not the whole budget, and none where a measurement settles it first: outputs
that are already probabilities, an lr of 0, nothing trainable (before any step), or
no gradient reaching any weight (after the first backward). A failure names its cause
when it can: those, a loss floor (a plateau far above the target), dead units.

The subset is at most a quarter of the training split (SUBSET_SHARE): on a dataset of a
few hundred rows 64 samples are not a tiny subset, and every full-batch step would cost
a large share of an epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from stagetune.workers.errors import ConfigError
from stagetune.workers.losses import loss_fn
from stagetune.workers.models import count_parameters, set_train_mode
from stagetune.workers.objective import loss_name
from stagetune.workers.optim import build_optimizer
from stagetune.workers.probes import _causes as causes
from stagetune.workers.probes._common import ProbeSetup, option, prepare, verdict
from stagetune.workers.probes._signals import Record, are_probabilities, gradient_state, recording
from stagetune.workers.request import TrialRequest, TrialResult

OPTIONS = ("samples", "steps", "target_fraction", "max_epochs")
SUBSET_SHARE = 0.25  # the subset's largest share of the training split
# Regularisation and augmentation are off: they exist to stop exactly this fit.
NO_REGULARISATION = {"dropout": 0.0, "weight_decay": 0.0, "augment": "none",
                     "label_smoothing": 0.0, "schedule": "constant"}
# 0.1%, not 1%: sigmoid nets without normalisation sit on a saddle near the prior's
# entropy for 30-60 steps, gaining 0.1-0.3% per 25 steps, before their loss falls.
MIN_STEPS, WINDOW, MIN_GAIN = 30, 25, 0.001
WHY = {"plateau": "the loss plateaued", "max_epochs": "the max_epochs cost cap",
       "not_finite": "the loss is not finite", "steps": "the step budget",
       "zero_gradients": "every gradient is zero", "detached": "the loss has no gradient",
       "still": "the loss did not move"}
STILL = 1e-3  # a loss whose whole range stays within this share of its first value never moved
STILL_STEPS = 10  # ... over this many steps: stop, there is nothing more to see
FIT_LOSS = 0.1  # with every sample right, a loss below this share of the expected one passes
# A full-batch loss that rises by more than a tenth in at least 3 steps (and 5% of them) goes
# up and down: the steps overshoot. Adam's occasional spike is one or two such rises.
RISE, MIN_RISES, RISE_SHARE = 0.10, 3, 0.05
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
    samples = min(samples, max(2, int(SUBSET_SHARE * data.train_size)))
    x, y = data.sample("train", samples)  # the first items: a split is in random order
    x, y = x.to(setup.device), y.to(setup.device)
    n_train = data.train_size
    expected = data.expected_initial_loss
    target = fraction * expected
    budget = steps
    if not math.isinf(max_epochs):  # each full-batch step costs len(x) / n_train epochs
        budget = min(steps, max(1, int(max_epochs * n_train / len(x))))
    figures = {"target_loss": target, "samples": len(x), "stop_rule": STOP_RULE}
    loss_used = loss_name(data, request.task.loss)
    early, optimizer, record = _before_fitting(setup, x, loss_used, figures)
    if early is not None:
        return early
    assert optimizer is not None and record is not None

    losses, stopped_by = fit_subset(model, optimizer, loss_fn(data, loss=loss_used), x, y,
                                    target, budget, check=_first_step_check)
    if stopped_by == "budget":
        stopped_by = "steps" if budget == steps else "max_epochs"
    with torch.no_grad():
        accuracy = subset_accuracy(model(x).float(), y, loss_used)
    found = causes.collect([
        causes.no_gradient(*gradient_state(model), stopped_by == "detached")
        if stopped_by in ("zero_gradients", "detached") else None,
        causes.dead_units(record.dead_share(), setup.arch)])
    result = judge_overfit(losses, target, len(x), steps, stopped_by, accuracy=accuracy,
                           expected=expected, explained=bool(found), lr=setup.train.lr)
    if result.status != "passed":
        result.message = " ".join([result.message, *(f.sentence for f in found)])
        result.status = causes.worst(result.status, *(f.status for f in found))
        result.probe |= causes.figures(found)
    result.probe |= {**figures, "steps": len(losses),
                     "epochs_equivalent": len(losses) * len(x) / n_train,
                     "stopped_by": stopped_by, "stopped_early": len(losses) < steps,
                     "plateau_at": len(losses) if stopped_by == "plateau" else None,
                     "subset_accuracy": accuracy, "dead_units": record.dead_share()}
    result.parameters = count_parameters(model)
    return result


def _before_fitting(setup: ProbeSetup, x: torch.Tensor, loss: str, figures: dict[str, Any]
                    ) -> tuple[TrialResult | None, torch.optim.Optimizer | None, Record | None]:
    """What settles the probe before a step (nothing trainable, outputs that are already
    probabilities, an lr of 0), else the optimizer and what one forward showed."""
    model = setup.model
    try:
        optimizer = build_optimizer(model, setup.train, setup.arch)
    except ConfigError:  # nothing trainable: the probe's answer, not an input error
        return _stopped_at_once(causes.no_gradient(0, 0, False), model, figures, "frozen"), \
            None, None
    set_train_mode(model)
    with torch.no_grad(), recording(model) as record:  # the outputs' form and dead units
        out = model(x).float()
    if are_probabilities(out, loss):
        finding = causes.probabilities(loss, setup.data.num_classes)
        return _stopped_at_once(finding, model, figures), None, None
    if all(group["lr"] == 0 for group in optimizer.param_groups):
        return _stopped_at_once(causes.zero_lr(setup.train), model, figures), None, None
    return None, optimizer, record


def _stopped_at_once(finding: causes.Finding | None, model: nn.Module,
                     figures: dict[str, Any], stopped_by: str | None = None) -> TrialResult:
    """Failed before a step: a measurement already shows the loss cannot fall."""
    assert finding is not None
    result = verdict("failed", f"The model cannot learn, so no step was taken. "
                     f"{finding.sentence}", losses=[], steps=0, epochs_equivalent=0.0,
                     stopped_by=stopped_by or finding.cause,
                     stopped_early=True, **figures, **causes.figures([finding]))
    result.parameters = count_parameters(model)
    return result


def _first_step_check(step: int, model: nn.Module) -> str | None:
    """After the first backward: no gradient reaches any weight, so no step can help."""
    if step == 0 and gradient_state(model)[1] == 0:
        return "zero_gradients"
    return None


def subset_accuracy(out: torch.Tensor, y: torch.Tensor, loss: str) -> float | None:
    """The share of the subset a classifier gets right (every label, for multi-label)."""
    if loss == "cross_entropy" and out.ndim == 2 and y.ndim == 1:
        return float((out.argmax(1) == y).float().mean())
    if loss == "bce_with_logits" and out.shape == y.shape:
        return float(((out > 0) == (y > 0.5)).all(1).float().mean())
    return None


def fit_subset(model: nn.Module, optimizer: torch.optim.Optimizer,
               criterion: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               target: float, budget: int, check: Callable[[int, nn.Module], str | None] | None = None
               ) -> tuple[list[float], str]:
    """Full-batch steps on the subset until a stop condition holds; the losses and why.
    `check(step, model)`, after each backward, may name a reason to stop at once."""
    set_train_mode(model)
    losses: list[float] = []
    for step in range(budget):
        loss = criterion(model(x).float(), y)
        if not loss.requires_grad:  # a detached graph: backward would raise
            return [loss.item()], "detached"
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        stop = check(step, model) if check is not None else None
        if stop is not None:
            return [loss.item()], stop
        optimizer.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            return losses, "not_finite"
        if losses[-1] <= target:
            return losses, "target"
        if len(losses) >= STILL_STEPS and max(losses) - min(losses) <= STILL * abs(losses[0]):
            return losses, "still"
        if plateaued(losses):
            return losses, "plateau"
    return losses, "budget"


def big_rises(losses: list[float]) -> int:
    """Steps whose loss rose by more than `RISE` of the loss before them."""
    return sum(b > (1 + RISE) * a for a, b in zip(losses, losses[1:], strict=False))


def judge_overfit(losses: list[float], target: float, samples: int, steps: int,
                  stopped_by: str, accuracy: float | None = None,
                  expected: float | None = None, explained: bool = False,
                  lr: float | None = None) -> TrialResult:
    """Passed at the target; or, for a classifier, with every sample right and the loss
    below FIT_LOSS of the expected initial loss (a linear softmax on separable samples
    gets there, then creeps toward zero as its weights grow: no sign of a broken
    pipeline). Otherwise warned or failed, naming a loss floor when it plateaued, and its
    usual suspects unless a measured cause (`explained`) follows the sentence."""
    finite = [v for v in losses if math.isfinite(v)]
    first, best = losses[0], min(finite, default=math.inf)
    ran = len(losses)
    if best <= target:
        return verdict("passed", f"The loss on {samples} samples fell from {first:.3g} to "
                       f"{best:.3g} in {ran} steps: the pipeline can learn.", losses=losses)
    if accuracy == 1.0 and expected is not None and best <= FIT_LOSS * expected:
        return verdict("passed", f"The loss on {samples} samples fell from {first:.3g} to "
                       f"{best:.3g} in {ran} steps, every sample classified right: the "
                       f"pipeline can learn (the target {target:.3g} is for the loss, which "
                       "keeps falling slowly once every sample is right).", losses=losses)
    stop = "" if ran == steps else f" (stopped after {ran} of {steps} steps: {WHY[stopped_by]})"
    floor, advice, still = "", "a larger learning rate", False
    rises = big_rises(finite)
    if rises >= max(MIN_RISES, RISE_SHARE * ran):
        # the loss went up and down: a smaller step, whatever else the plateau suggests
        floor = (f" The loss rose by more than {RISE:.0%} in {rises} of {ran} steps: it goes "
                 "up and down, the steps overshoot; lower the learning rate.")
        advice = "a smaller learning rate"
    elif (stopped_by == "still" or len(finite) > 1 and max(finite) - best <= STILL * abs(first)
          ) and not explained:
        # not a floor: a floor is reached by falling, this loss never moved
        still = True
        at = f" (lr {lr:g})" if lr is not None else ""
        floor = (f" The loss did not move at all (within {STILL:.1%} over {ran} steps): the "
                 f"steps change the weights too little to matter, so the learning rate is far "
                 f"too small{at} or the gradients reaching the weights are tiny; raise lr, or "
                 "let the LR probe find its range.")
    elif stopped_by == "plateau":
        floor = (f" The loss plateaued at {best:.3g}, {best / target:.0f}x the target: the model "
                 "cannot go below it.")
        if not explained:
            floor += (" Look for outputs squashed before the loss (a softmax, sigmoid or "
                      "clamp in the model's last layer), contradicting labels in the subset, "
                      "or too little capacity.")
    if best <= 0.2 * first:
        return verdict("warned", f"The loss on {samples} samples fell from {first:.3g} to "
                       f"{best:.3g} but not below {target:.3g}{stop}: give it more steps, "
                       f"{advice} or more capacity.{floor}", losses=losses)
    if stopped_by in ("zero_gradients", "detached"):
        return verdict("failed", f"The loss on {samples} samples cannot fall: no gradient "
                       f"reaches the weights (stopped at step {ran}).", losses=losses)
    generic = ("" if floor else " Check the learning rate, frozen weights, the loss and the "
               "labels.")
    if still:  # said instead of the floor's generic suspects
        return verdict("failed", f"The loss on {samples} samples stayed at {first:.3g} over "
                       f"{ran} steps{stop}.{floor}", losses=losses)
    return verdict("failed", f"The loss on {samples} samples stayed near {first:.3g} (best "
                   f"{best:.3g}) over {ran} steps{stop}: the model cannot fit even a tiny subset."
                   f"{floor}{generic}", losses=losses)
