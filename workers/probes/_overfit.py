"""Overfit probe: a working pipeline drives the loss on a tiny subset near zero."""

from __future__ import annotations

import torch

from workers.errors import ConfigError
from workers.models import set_train_mode
from workers.optim import build_optimizer
from workers.probes._common import option, prepare, verdict
from workers.request import TrialRequest, TrialResult
from workers.train import loss_fn

OPTIONS = ("samples", "steps", "target_fraction")
# Regularisation and augmentation are off: they exist to stop exactly this fit.
NO_REGULARISATION = {"dropout": 0.0, "weight_decay": 0.0, "augment": "none",
                     "label_smoothing": 0.0, "schedule": "constant"}


def overfit(request: TrialRequest) -> TrialResult:
    samples = option(request, "samples", 64, OPTIONS)
    steps = option(request, "steps", 300, OPTIONS)
    fraction = option(request, "target_fraction", 0.02, OPTIONS)
    if samples < 2 or steps < 1:
        raise ConfigError(f"overfit needs samples >= 2 and steps >= 1 (got {samples}, {steps})")
    setup = prepare(request, NO_REGULARISATION)
    data, model = setup.data, setup.model
    x = data.x_train[:samples].to(setup.device)
    y = data.y_train[:samples].to(setup.device)
    target = fraction * data.expected_initial_loss
    try:
        optimizer = build_optimizer(model, setup.train, setup.arch)
    except ConfigError as exc:  # nothing trainable: the probe's answer, not an input error
        return verdict("failed", f"The model cannot learn: {exc}.", losses=[], target_loss=target,
                       epochs_equivalent=0.0)

    # Full-batch steps on the subset until the loss is near zero or the budget is spent.
    criterion = loss_fn(data)
    set_train_mode(model)
    losses: list[float] = []
    for _ in range(steps):
        loss = criterion(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] <= target or not torch.isfinite(loss):
            break

    first, best = losses[0], min(losses)
    figures = {"losses": losses, "target_loss": target, "samples": len(x), "steps": len(losses),
               "epochs_equivalent": len(losses) * len(x) / len(data.x_train)}
    if best <= target:
        return verdict("passed", f"The loss on {len(x)} samples fell from {first:.3g} to "
                       f"{best:.3g} in {len(losses)} steps: the pipeline can learn.", **figures)
    if best <= 0.2 * first:
        return verdict("warned", f"The loss on {len(x)} samples fell from {first:.3g} to "
                       f"{best:.3g} but not below {target:.3g} in {steps} steps: give it more "
                       "steps, a larger learning rate or more capacity.", **figures)
    return verdict("failed", f"The loss on {len(x)} samples stayed near {first:.3g} (best "
                   f"{best:.3g}) over {len(losses)} steps: the model cannot fit even a tiny "
                   "subset. Check the learning rate, frozen weights, the loss and the labels.",
                   **figures)
