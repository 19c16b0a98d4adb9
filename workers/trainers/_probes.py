"""init_check, overfit and lr_probe on a trainer's own parts (model, loss, batches).

The probes' own judging runs unchanged; what differs is where the pieces come from: the
model and loss from `parts(ctx)`, the data from the first of its batches, held in memory
(a probe needs a few hundred samples), the optimizer from the trial's built-in knobs
(lr, optimizer, ...: what the lr probe hands the search). Without parts a probe is
skipped with a sentence that says what to expose.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from stagetune.workers.errors import ConfigError
from stagetune.workers.models import count_parameters
from stagetune.workers.optim import build_optimizer
from stagetune.workers.probes import (
    NO_REGULARISATION,
    STOP_RULE,
    Finding,
    StepUnderTest,
    check_step,
    fit_subset,
    judge_gradients,
    judge_initial_loss,
    judge_lr_range,
    judge_overfit,
    lr_sweep,
    option,
    sweep_options,
    worst,
)
from stagetune.workers.request import TrialRequest, TrialResult
from stagetune.workers.trainers._context import TrainerContext
from stagetune.workers.trainers._parts import TrainerParts
from stagetune.workers.trainers._registry import TRAINERS
from stagetune.workers.trainers._run import make_context

PROBE_MODES = ("init_check", "overfit", "lr_probe")
OVERRIDES: dict[str, dict[str, Any]] = {"init_check": {}, "overfit": NO_REGULARISATION,
                                        "lr_probe": {"schedule": "constant"}}


def probe_trainer(request: TrialRequest) -> TrialResult:
    """Run `request`'s probe on its trainer's parts, or skip it saying what to expose."""
    name = request.task.trainer
    assert name is not None
    entry = TRAINERS.entry(name)
    parts_fn = entry.info.get("parts")
    if parts_fn is None:
        return TrialResult("skipped", message=skip_reason(name, entry.info.get("kind"),
                                                           request.mode))
    ctx = make_context(request, overrides=OVERRIDES[request.mode])
    parts = _parts(name, parts_fn, ctx)
    parts.model.to(ctx.device)
    probe = {"init_check": _init_check, "overfit": _overfit, "lr_probe": _lr_probe}
    result: TrialResult = probe[request.mode](request, ctx, parts)
    result.parameters = count_parameters(parts.model)
    return result


def skip_reason(name: str, kind: str | None, mode: str) -> str:
    if kind == "command":
        step = (" (nor can its training step be checked: gradients zeroed between steps, "
                "every layer learning, training and evaluation modes, a deterministic "
                "evaluation)" if mode == "init_check" else "")
        return (f"Skipped: trainer '{name}' is a command, whose model stagetune cannot "
                f"reach, so {mode} cannot run{step}; register a Python trainer with "
                "parts=... (and its step) to have it probed.")
    return (f"Skipped: trainer '{name}' exposes no parts. Register it with "
            "parts=fn(ctx) -> TrainerParts(model, loss, batches) (a fresh model, its loss "
            f"and an iterable of (x, y) batches) so that {mode} runs on them.")


def _parts(name: str, parts_fn: Callable[[TrainerContext], Any], ctx: TrainerContext
           ) -> TrainerParts:
    parts = parts_fn(ctx)
    if not isinstance(parts, TrainerParts):
        raise ConfigError(f"trainer '{name}': parts(ctx) returned {type(parts).__name__}; "
                          "return TrainerParts(model, loss, batches)")
    if not isinstance(parts.model, nn.Module):
        raise ConfigError(f"trainer '{name}': TrainerParts.model must be a torch.nn.Module "
                          f"(got {type(parts.model).__name__})")
    if not callable(parts.loss):
        raise ConfigError(f"trainer '{name}': TrainerParts.loss must be a function "
                          "loss(out, y) -> scalar tensor")
    return parts


def take(batches: Iterable[Any], n: int, device: torch.device, name: str = "trainer"
         ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The first `n` samples of `batches` (fewer if it runs out) on `device`, and the
    size of its first batch."""
    xs, ys, count, size = [], [], 0, 0
    for batch in batches:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2
                and all(isinstance(t, torch.Tensor) for t in batch)):
            raise ConfigError(f"trainer '{name}': TrainerParts.batches must yield (x, y) "
                              f"pairs of tensors (got {type(batch).__name__})")
        x, y = batch
        size = size or len(x)
        xs.append(x)
        ys.append(y)
        count += len(x)
        if count >= n:
            break
    if count < 2:
        raise ConfigError(f"trainer '{name}': TrainerParts.batches yielded {count} samples; "
                          "the probes need at least 2")
    return torch.cat(xs)[:n].to(device), torch.cat(ys)[:n].to(device), size


def expected_loss(parts: TrainerParts, y: torch.Tensor) -> tuple[float | None, str, str]:
    """What a model that knows nothing scores under the parts' loss, what that is, and
    the loss's name."""
    loss = parts.loss
    if parts.expected_loss is not None:
        return float(parts.expected_loss), "as the trainer states", _name(loss)
    if isinstance(loss, nn.CrossEntropyLoss) or loss is F.cross_entropy:
        counts = torch.bincount(y.long().flatten()).float()
        prior = counts[counts > 0] / counts.sum()
        return (float(-(prior * prior.log()).sum()), "the entropy of the sample's label prior",
                "cross-entropy")
    if isinstance(loss, nn.BCEWithLogitsLoss) or loss is F.binary_cross_entropy_with_logits:
        p = y.float().mean(0).clamp(1e-6, 1 - 1e-6)
        return (float((-(p * p.log() + (1 - p) * (1 - p).log())).mean()),
                "the mean per-label entropy", "BCE")
    if isinstance(loss, nn.MSELoss) or loss is F.mse_loss:
        return float(y.float().var(unbiased=False)), "the label variance", "MSE"
    return None, "", _name(loss)


def _name(loss: Any) -> str:
    return str(getattr(loss, "__name__", type(loss).__name__))


def _init_check(request: TrialRequest, ctx: TrainerContext, parts: TrainerParts
                ) -> TrialResult:
    batches = option(request, "batches", 4, ("batches",))
    x, y, size = take(parts.batches, batches * max(ctx.train.batch_size, 1), ctx.device,
                      ctx.trainer)
    model = parts.model
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    stds: dict[str, float] = {}
    hooks = [m.register_forward_hook(
        lambda _m, _i, out, n=n: stds.__setitem__(n, float(out.detach().float().std())))
        for n, m in layers]
    model.train()
    losses = [parts.loss(model(x[i:i + size]), y[i:i + size]) for i in range(0, len(x), size)]
    loss = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in losses]).mean()
    if loss.requires_grad:
        loss.backward()
    for h in hooks:
        h.remove()
    grads = {n: float(m.weight.grad.norm()) for n, m in layers if m.weight.grad is not None}
    value = loss.item()
    expected, what, name = expected_loss(parts, y)
    status, message = _judge_loss(value, expected, what, name)
    values = list(grads.values())
    ratio = values[0] / values[-1] if len(values) > 1 and values[-1] else 1.0
    grad_status, grad_message = judge_gradients(ratio)
    found, step_figures = _step_check(ctx, parts, x, y, loss.requires_grad)
    status = worst(status, grad_status, *(f.status for f in found))
    message = " ".join(m for m in [message, grad_message, *(f.sentence for f in found)] if m)
    return TrialResult(status, message=message, probe={
        "epochs_equivalent": 0.0, "loss": value, "expected_loss": expected,
        "loss_ratio": value / expected if expected else None, "activation_std": stds,
        "grad_norm": grads, "grad_ratio_first_to_last": ratio,
        "samples": len(x),
        **step_figures, "causes": [f.as_dict() for f in found]})


def _step_check(ctx: TrainerContext, parts: TrainerParts, x: torch.Tensor, y: torch.Tensor,
                differentiable: bool) -> tuple[list[Finding], dict[str, Any]]:
    """The training step's invariants on the trainer's own step and evaluation where it
    exposes them, else on the probes' own over its model and loss."""
    if not differentiable:  # a detached loss: nothing steps, the gradients above say so
        return [], {}
    model, optimizer = parts.model, parts.optimizer
    step, evaluate = parts.step, parts.evaluate
    if step is None:
        if optimizer is None:
            try:
                optimizer = build_optimizer(model, ctx.train, ctx.arch)
            except ConfigError:  # nothing trainable: no step to check
                return [], {}
        step = _probe_step(model, parts.loss, optimizer)
    return check_step(StepUnderTest(model, step, evaluate or _probe_evaluation(model),
                                    optimizer, owner=f"trainer '{ctx.trainer}'"), x, y)


def _probe_step(model: nn.Module, loss: Callable[..., Any], optimizer: torch.optim.Optimizer
                ) -> Callable[[torch.Tensor, torch.Tensor], None]:
    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        optimizer.step()
    return step


def _probe_evaluation(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], None]:
    @torch.no_grad()
    def evaluate(x: torch.Tensor, _y: torch.Tensor) -> None:
        model.eval()
        model(x)
    return evaluate


def _judge_loss(value: float, expected: float | None, what: str, name: str
                ) -> tuple[str, str]:
    """The built-in init check's judgement; without an expected value, only its note."""
    if expected is None and math.isfinite(value):
        return "passed", (f"Initial {name} loss {value:.3g}, not judged: the trainer's loss "
                          "states no expected value; give TrainerParts(expected_loss=...) to "
                          "have it checked.")
    return judge_initial_loss(value, expected, name, what)


def _overfit(request: TrialRequest, ctx: TrainerContext, parts: TrainerParts) -> TrialResult:
    allowed = ("samples", "steps", "target_fraction", "max_epochs")
    samples = option(request, "samples", 64, allowed)
    steps = option(request, "steps", 300, allowed)
    fraction = option(request, "target_fraction", 0.02, allowed)
    x, y, _ = take(parts.batches, samples, ctx.device, ctx.trainer)
    model = parts.model
    optimizer = build_optimizer(model, ctx.train, ctx.arch)
    expected, _, _ = expected_loss(parts, y)
    with torch.no_grad():  # without a stated expectation: a fraction of the first loss
        first = float(parts.loss(model(x), y))
    target = fraction * (expected if expected is not None else first)
    losses, stopped_by = fit_subset(model, optimizer, parts.loss, x, y, target, steps)
    stopped_by = "steps" if stopped_by == "budget" else stopped_by
    result = judge_overfit(losses, target, len(x), steps, stopped_by)
    result.probe |= {"target_loss": target, "samples": len(x), "steps": len(losses),
                     "epochs_equivalent": 0.0, "stop_rule": STOP_RULE, "stopped_by": stopped_by,
                     "stopped_early": len(losses) < steps,
                     "plateau_at": len(losses) if stopped_by == "plateau" else None}
    return result


def _lr_probe(request: TrialRequest, ctx: TrainerContext, parts: TrainerParts) -> TrialResult:
    options = sweep_options(request)  # max_epochs is checked, not used: the data's size is unknown
    bs = max(ctx.train.batch_size, 1)
    x, y, _ = take(parts.batches, min(bs * options.iterations, 4096), ctx.device, ctx.trainer)
    lrs = options.lrs(options.iterations)
    raw, _ = lr_sweep(parts.model, ctx.train, ctx.arch, parts.loss, (x, y), lrs, min(bs, len(x)),
                      torch.Generator().manual_seed(ctx.seed), options)
    result = judge_lr_range(lrs[:len(raw)], raw, ctx.train)
    result.probe |= {"epochs_equivalent": 0.0, "iterations": options.iterations}
    return result
