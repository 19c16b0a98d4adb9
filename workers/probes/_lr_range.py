"""Learning-rate range test (Smith 2017): grow the LR exponentially and watch the loss.

The two suggestion rules are written here because the libraries that have them
(fastai, pytorch-lightning) are not worth a dependency for forty lines.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from workers.errors import ConfigError
from workers.models import set_train_mode
from workers.optim import build_optimizer
from workers.probes._common import option, prepare, verdict
from workers.request import TrialRequest, TrialResult
from workers.train import loss_fn

OPTIONS = ("iterations", "lr_min", "lr_max", "smoothing", "diverge_factor")


def lr_probe(request: TrialRequest) -> TrialResult:
    iterations = option(request, "iterations", 100, OPTIONS)
    lr_min = option(request, "lr_min", 1e-7, OPTIONS)
    lr_max = option(request, "lr_max", 10.0, OPTIONS)
    beta = option(request, "smoothing", 0.98, OPTIONS)
    diverge = option(request, "diverge_factor", 4.0, OPTIONS)
    if not 0 < lr_min < lr_max or iterations < 10:
        raise ConfigError("lr_probe needs 0 < lr_min < lr_max and iterations >= 10")
    setup = prepare(request, {"schedule": "constant"})
    data, model = setup.data, setup.model
    optimizer = build_optimizer(model, setup.train, setup.arch)
    # Each group keeps its ratio to the base LR (discriminative LRs stay discriminative).
    ratios = [g["lr"] / setup.train.lr if setup.train.lr else 1.0 for g in optimizer.param_groups]
    criterion = loss_fn(data, setup.train.label_smoothing)
    bs = min(setup.train.batch_size, len(data.x_train))
    x, y = data.x_train.to(setup.device), data.y_train.to(setup.device)

    set_train_mode(model)
    lrs, smoothed, raw = [], [], []
    avg, order, pos = 0.0, torch.randperm(len(x), generator=setup.generator), 0
    for i in range(iterations):
        lr = lr_min * (lr_max / lr_min) ** (i / (iterations - 1))
        for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
            group["lr"] = lr * ratio
        if pos + bs > len(x):
            order, pos = torch.randperm(len(x), generator=setup.generator), 0
        idx = order[pos:pos + bs].to(setup.device)
        pos += bs
        loss = criterion(model(x[idx]).float(), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            break
        avg = beta * avg + (1 - beta) * value
        lrs.append(lr)
        raw.append(value)
        smoothed.append(avg / (1 - beta ** (i + 1)))
        if i > 5 and smoothed[-1] > diverge * min(smoothed):
            break
    result = _judge(lrs, smoothed, raw)
    result.probe["epochs_equivalent"] = (i + 1) * bs / len(x)
    return result


def _judge(lrs: list[float], smoothed: list[float], raw: list[float]) -> TrialResult:
    figures = {"lrs": lrs, "losses": smoothed, "raw_losses": raw}
    if len(lrs) < 10 or min(smoothed) > 0.9 * smoothed[0]:
        return verdict("failed", "No learning rate in the range made the loss fall: check the "
                       "pipeline (the overfit probe says more) or widen lr_min/lr_max.", **figures)
    steepest, valley = steepest_descent(lrs, smoothed), valley_rule(lrs, smoothed)
    lr_at_min = lrs[int(np.argmin(smoothed))]
    suggested = valley
    low, high = suggested / 10, max(min(lr_at_min, suggested * 10), suggested * 2)
    return verdict(
        "passed",
        f"The loss falls fastest near lr {steepest:.2g} and bottoms out at {lr_at_min:.2g}; "
        f"suggested lr {suggested:.2g} (valley rule), search range {low:.2g} to {high:.2g}.",
        suggested_lr=suggested, steepest_lr=steepest, valley_lr=valley, lr_at_min_loss=lr_at_min,
        lr_range=[low, high], rule="valley", **figures,
    )


def steepest_descent(lrs: list[float], losses: list[float]) -> float:
    """The LR where the smoothed loss falls fastest against log LR, before its minimum."""
    end = int(np.argmin(losses)) + 1
    if end < 3:
        return lrs[0]
    slope = np.gradient(np.array(losses[:end]), np.log(np.array(lrs[:end])))
    return lrs[int(np.argmin(slope))]


def valley_rule(lrs: list[float], losses: list[float]) -> float:
    """fastai's valley rule: the longest falling stretch of the curve, two thirds along it."""
    n = len(losses)
    run = [1] * n
    start, end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[end] < run[i]:
            end, start = i, i - run[i]
    third = (end - start) / 3
    return lrs[max(0, min(n - 1, start + int(third) + int(third / 2)))]
