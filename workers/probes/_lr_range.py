"""Learning-rate range test (Smith 2017): grow the LR exponentially and watch the loss.

The suggestion is the lr where the loss bottoms out, on a curve smoothed without lag,
divided by 3 for SGD and by 10 for adaptive optimizers (see DIVISOR and `suggest`;
bench/lr_probe_accuracy.py measures it against a grid of trained lrs). fastai's valley
rule and the steepest point are reported too; the libraries that have them (fastai,
pytorch-lightning) are not worth a dependency for forty lines. The minimum and the
steepest point ignore the sweep's first tenth (at least the smoothing half-window,
`ignored_first`): at lrs of 1e-7 a loss that moves is batch noise, not descent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stagetune.workers.config import ModelConfig, TrainConfig
from stagetune.workers.errors import ConfigError
from stagetune.workers.losses import loss_fn
from stagetune.workers.models import count_parameters, set_train_mode
from stagetune.workers.optim import build_optimizer
from stagetune.workers.probes._causes import fix
from stagetune.workers.probes._common import option, prepare, verdict
from stagetune.workers.request import TrialRequest, TrialResult

# smoothing and diverge_factor: the running average that ends the sweep once it diverges.
OPTIONS = ("iterations", "lr_min", "lr_max", "smoothing", "diverge_factor", "max_epochs")
SPAN = 0.3  # decades either side of a point that the centred average covers
NO_FALL = 0.01  # a smoothed loss that never falls 1% below its start: nothing learns
CLEAR_FALL = 0.1  # below 10%, the curve has too little shape to place a range
IGNORE_SHARE = 0.1  # the sweep's first tenth: too few steps for a falling loss to mean much
# The suggestion is the loss minimum's lr divided by this. SGD's step is lr x gradient,
# so it shrinks as the loss falls and an lr that is best in the probe's first steps stays
# good; adaptive optimizers step about lr per weight whatever the gradient, so the lr
# that is best early is too hot for the rest of a run (fastai's old "minimum / 10").
# On the three tasks of bench/results/lr_probe.md the valley rule it replaces fell
# 0.3-1.6 decades short of the grid's best lr, SGD's most.
MIN_ITERATIONS = 10  # the fewest steps a sweep over the whole lr range is judged on
DIVISOR = {"sgd": 3.0, "sgd_nesterov": 3.0, "adam": 10.0, "adamw": 10.0, "rmsprop": 10.0}


def lr_probe(request: TrialRequest) -> TrialResult:
    options = sweep_options(request)
    setup = prepare(request, {"schedule": "constant"})
    data, n = setup.data, setup.data.train_size
    bs = min(setup.train.batch_size, n)
    iterations = options.iterations
    if not math.isinf(options.max_epochs):  # fewer, bigger LR steps over the same range
        affordable = int(options.max_epochs * n / bs)
        if affordable < MIN_ITERATIONS:
            return unaffordable(options.max_epochs, n, bs)
        iterations = min(iterations, affordable)
    lrs = options.lrs(iterations)
    criterion = loss_fn(data, setup.train.label_smoothing)
    # Arrays whole; a stream's sample, as much as fits SAMPLE_BYTES (workers.data._stream).
    x, y = data.sample("train")
    raw, steps = lr_sweep(setup.model, setup.train, setup.arch,
                          lambda out, target: criterion(out.float(), target),
                          (x.to(setup.device), y.to(setup.device)), lrs, bs, setup.generator,
                          options)
    result = judge_lr_range(lrs[:len(raw)], raw, setup.train)
    result.probe |= {"epochs_equivalent": steps * bs / n, "iterations": iterations,
                     "capped": iterations < options.iterations}
    result.parameters = count_parameters(setup.model)
    return result


def unaffordable(cap: float, n: int, bs: int) -> TrialResult:
    """Skipped: its share of the budget pays for fewer steps than a sweep needs (a small
    training split, whose epoch is a few batches). A shorter sweep with smaller batches
    would place the range for a batch size the search does not train with."""
    need = MIN_ITERATIONS * bs / n
    return verdict("skipped", (
        f"Not run: the LR range test needs at least {MIN_ITERATIONS} steps, {need:.3g} epochs "
        f"of this {n}-sample training split at batch size {bs}, and its share of the budget "
        f"pays for {cap:.3g}. The search keeps the spec's lr range; a budget "
        f"{need / cap:.2g} times as large pays for the test."), epochs_equivalent=0.0,
        capped=True)


@dataclass(frozen=True)
class SweepOptions:
    """The LR range test's options (OPTIONS), checked by `sweep_options`."""

    iterations: int
    lr_min: float
    lr_max: float
    smoothing: float  # of the running average that ends the sweep once it diverges
    diverge_factor: float
    max_epochs: float  # a cap on the sweep's cost, in epochs of the training split

    def lrs(self, iterations: int) -> list[float]:
        """`iterations` lrs from lr_min to lr_max, evenly spaced on a log scale."""
        ratio = self.lr_max / self.lr_min
        return [self.lr_min * ratio ** (i / (iterations - 1)) for i in range(iterations)]


def sweep_options(request: TrialRequest) -> SweepOptions:
    """The request's LR range test options; ConfigError for one out of its range."""
    options = SweepOptions(
        iterations=option(request, "iterations", 100, OPTIONS),
        lr_min=option(request, "lr_min", 1e-7, OPTIONS),
        lr_max=option(request, "lr_max", 10.0, OPTIONS),
        smoothing=option(request, "smoothing", 0.98, OPTIONS),
        diverge_factor=option(request, "diverge_factor", 4.0, OPTIONS),
        max_epochs=option(request, "max_epochs", math.inf, OPTIONS))
    if (not 0 < options.lr_min < options.lr_max or options.iterations < MIN_ITERATIONS
            or options.max_epochs <= 0):
        raise ConfigError(f"lr_probe needs 0 < lr_min < lr_max, iterations >= {MIN_ITERATIONS} "
                          "and max_epochs > 0")
    return options


def lr_sweep(model: nn.Module, train: TrainConfig, arch: ModelConfig,
             loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             sample: tuple[torch.Tensor, torch.Tensor], lrs: list[float], batch_size: int,
             generator: torch.Generator, options: SweepOptions) -> tuple[list[float], int]:
    """The range test's sweep: one step of `train`'s optimizer per lr of `lrs`, on batches
    of `sample` drawn in `generator`'s order, `loss(out, y)` the loss. The raw losses, and
    the steps taken (a non-finite one included). An EMA of the loss stops the sweep once
    it has clearly diverged."""
    optimizer = build_optimizer(model, train, arch)
    # Each group keeps its ratio to the base LR (discriminative LRs stay discriminative).
    ratios = [g["lr"] / train.lr if train.lr else 1.0 for g in optimizer.param_groups]
    x, y = sample
    beta = options.smoothing
    set_train_mode(model)
    raw: list[float] = []
    avg, low = 0.0, math.inf
    order, pos = torch.randperm(len(x), generator=generator), 0
    for i, lr in enumerate(lrs):
        for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
            group["lr"] = lr * ratio
        if pos + batch_size > len(x):
            order, pos = torch.randperm(len(x), generator=generator), 0
        idx = order[pos:pos + batch_size].to(x.device)
        pos += batch_size
        value = _step(model, optimizer, loss, x[idx], y[idx])
        if not math.isfinite(value):
            return raw, i + 1
        raw.append(value)
        avg = beta * avg + (1 - beta) * value
        ema = avg / (1 - beta ** (i + 1))
        low = min(low, ema)
        if i > 5 and ema > options.diverge_factor * low:
            break
    return raw, len(raw)


def _step(model: nn.Module, optimizer: torch.optim.Optimizer,
          loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
          x: torch.Tensor, y: torch.Tensor) -> float:
    value = loss(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    optimizer.step()
    return value.item()


def judge_lr_range(lrs: list[float], raw: list[float], train: TrainConfig) -> TrialResult:
    """The verdict on a sweep's raw losses at `lrs`, and the lr range it suggests."""
    smoothed = centred_average(lrs, raw)
    figures = {"lrs": lrs, "losses": smoothed, "raw_losses": raw}
    if len(lrs) < 10 or min(smoothed) >= (1 - NO_FALL) * smoothed[0]:
        return verdict("failed", "No learning rate in the range made the loss fall: check the "
                       "pipeline (the overfit probe says more) or widen lr_min/lr_max.", **figures)
    if min(smoothed) > (1 - CLEAR_FALL) * smoothed[0]:
        # it learns, slowly: some networks on tiny inputs fall a few percent in a sweep's
        # hundred steps before they diverge, yet train well; overfit judges whether it can
        fell = 1 - min(smoothed) / smoothed[0]
        return verdict("warned", f"The loss fell only {fell:.0%} in the range test "
                       f"({smoothed[0]:.3g} to {min(smoothed):.3g}) before it stopped at lr "
                       f"{lrs[-1]:.2g}: too little to place a range, so the search keeps the spec's "
                       "lr range. The network learns slowly in its first steps; more "
                       "iterations place it better.", **figures)
    suggested, lr_at_min = suggest(lrs, smoothed, train.optimizer)
    divisor = DIVISOR[train.optimizer]
    low, high = suggested / 10, lr_at_min
    steepest, valley = steepest_descent(lrs, smoothed), valley_rule(lrs, smoothed)
    edge = (" The loss still fell at the top of the range, so this is a lower bound: raise "
            "lr_max." if lr_at_min == lrs[-1] else "")
    return verdict(
        "passed",
        f"The loss bottoms out at lr {lr_at_min:.2g}; suggested lr {suggested:.2g} (1/{divisor:g} "
        f"of that, the rule for {train.optimizer}), search range {low:.2g} to {high:.2g}.{edge}",
        suggested_lr=suggested, steepest_lr=steepest, valley_lr=valley, lr_at_min_loss=lr_at_min,
        lr_range=[low, high], rule=f"min/{divisor:g}", ignored_first=ignored_first(lrs),
        fixes=[fix(f"the range where the loss falls fastest for {train.optimizer}, from the LR "
                   "range test", when={"optimizer": train.optimizer},
                   lr={"low": low, "high": high, "log": True})], **figures,
    )


def ignored_first(lrs: list[float]) -> int:
    """How many points at the start of the sweep the steepest point and the minimum
    ignore: the first IGNORE_SHARE of them, and at least the centred average's half-window
    (its first values average fewer, one-sided neighbours), always leaving three."""
    if len(lrs) < 2:
        return 0
    per_decade = (len(lrs) - 1) / math.log10(lrs[-1] / lrs[0])
    skip = max(round(SPAN * per_decade), math.ceil(IGNORE_SHARE * len(lrs)))
    return max(0, min(skip, len(lrs) - 3))


def suggest(lrs: list[float], smoothed: list[float], optimizer: str) -> tuple[float, float]:
    """The suggested lr and the lr at the loss minimum (after the `ignored_first` points):
    the minimum over DIVISOR[optimizer].

    `smoothed` should come from `centred_average`: the usual EMA (beta 0.98) lags some
    50 steps, four decades of lr at 100 steps over 1e-7..10, and drags the minimum along.
    """
    skip = ignored_first(lrs)
    lr_at_min = lrs[skip + int(np.argmin(smoothed[skip:]))]
    return lr_at_min / DIVISOR[optimizer], lr_at_min


def centred_average(lrs: list[float], losses: list[float], span: float = SPAN) -> list[float]:
    """Each loss replaced by the mean of those within `span` decades of its lr, either side
    (at least one neighbour each side): smoothing without the lag of a running average."""
    if len(lrs) < 2:
        return list(losses)
    per_decade = (len(lrs) - 1) / math.log10(lrs[-1] / lrs[0])
    k = max(1, round(span * per_decade))
    values = np.asarray(losses, dtype=float)
    return [float(values[max(0, i - k):i + k + 1].mean()) for i in range(len(values))]


def steepest_descent(lrs: list[float], losses: list[float]) -> float:
    """The LR where the smoothed loss falls fastest against log LR, before its minimum,
    after the `ignored_first` points: the noise of the first steps is no descent."""
    skip = ignored_first(lrs)
    end = skip + int(np.argmin(losses[skip:])) + 1
    if end - skip < 3:
        return lrs[end - 1]
    slope = np.gradient(np.array(losses[skip:end]), np.log(np.array(lrs[skip:end])))
    return lrs[skip + int(np.argmin(slope))]


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
