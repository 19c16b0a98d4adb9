"""Invariants of the training step: what any correct step satisfies, whatever the model.

The init check's single backward pass cannot see state that leaks from one step to the
next, nor what a step does to the weights. Like TrainCheck (Jiang et al., OSDI'25), this
checks relations that hold within one or two iterations of any correct loop, on the
user's own step (the built-in loop's, or a trainer's exposed one) and one small batch:

- a step is a function of its state: two steps on the same batch from the same weights
  and random state give the same gradients (nothing accumulates or leaks between steps);
- every parameter that should learn gets a gradient, and a step moves the weights (a
  frozen bottom, such as a pretrained backbone, is by design; so is a group at lr 0);
- dropout and norm layers are in training mode while training and in evaluation mode
  while evaluating, and norm layers update their running statistics in training;
- evaluation is deterministic, and a sample's outputs do not depend on its batch.

`measure` runs the step and records; `workers.probes._step_findings` judges. Cost: three
evaluations and two steps on at most SAMPLES samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

SAMPLES = 16  # the batch the step runs on; its first half is evaluated alone
DROPOUTS = (nn.modules.dropout._DropoutNd,)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
ALL_NORMS = (*NORMS, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


@dataclass
class StepUnderTest:
    """A training step and an evaluation as the user's loop runs them.

    `step(x, y)`: one training step on a batch (modes, zeroing, forward, loss, backward,
    optimizer step: whatever the loop does per batch); `evaluate(x, y)`: the loop's
    evaluation of a batch; both run `model`, whose outputs are read by a hook.
    `optimizer`: the step's optimizer when it is known (which parameters it holds, at
    what lr). `owner` names the loop in sentences."""

    model: nn.Module
    step: Callable[[torch.Tensor, torch.Tensor], object]
    evaluate: Callable[[torch.Tensor, torch.Tensor], object]
    optimizer: torch.optim.Optimizer | None
    owner: str = "the training loop"


@dataclass
class StepRecord:
    """What the two steps and three evaluations showed."""

    train_modes: dict[str, bool] = field(default_factory=dict)  # mode-dependent modules
    eval_modes: dict[str, bool] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)  # module -> first call in the step
    grads: dict[str, torch.Tensor] = field(default_factory=dict)  # first step's
    grads_again: dict[str, torch.Tensor] = field(default_factory=dict)  # second step's
    error: tuple[int, str] | None = None  # the step (1 or 2) that raised, and why
    moved: dict[str, bool] = field(default_factory=dict)  # parameter -> changed by step 1
    stats_moved: dict[str, bool] = field(default_factory=dict)  # norm with running stats
    buffers_changed: list[str] = field(default_factory=list)  # besides norm statistics
    attributes_set: list[str] = field(default_factory=list)  # tensors a step left on modules
    eval_outputs: list[torch.Tensor] = field(default_factory=list)  # batch, batch, half


def measure(target: StepUnderTest, x: torch.Tensor, y: torch.Tensor) -> StepRecord:
    """Three evaluations (the batch twice, its first half alone), then a step, then the
    same step again from the first one's weights and random state."""
    with _deterministic():
        return _measure(target, x, y)


@contextmanager
def _deterministic() -> Iterator[None]:
    """cuDNN's deterministic algorithms while measuring (its default picks add in any
    order, so two equal steps could differ); the settings restored afterwards."""
    cudnn = torch.backends.cudnn
    before = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = before


def _measure(target: StepUnderTest, x: torch.Tensor, y: torch.Tensor) -> StepRecord:
    model, record = target.model, StepRecord()
    x, y = x[:SAMPLES], y[:SAMPLES]
    half = max(len(x) // 2, 1)
    model.zero_grad(set_to_none=True)
    with _watching(model, record.eval_modes, {}, record.eval_outputs):
        target.evaluate(x, y)
        target.evaluate(x, y)
        target.evaluate(x[:half], y[:half])
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    attributes = _tensor_attributes(model)
    rng = _rng_state()
    try:
        with _watching(model, record.train_modes, record.order, []), \
                _gradients(model, record.grads):
            target.step(x, y)
    except RuntimeError as exc:  # a graph kept from the probe's own pass, among others
        record.error = (1, str(exc).split("\n")[0])
        return record
    record.moved = {n: not torch.equal(p.detach(), params[n])
                    for n, p in model.named_parameters()}
    record.stats_moved = _stats_moved(model, buffers)
    record.buffers_changed = _buffers_changed(model, buffers)
    after = _tensor_attributes(model)
    record.attributes_set = [k for k, v in after.items() if attributes.get(k) is not v]
    with torch.no_grad():  # the same weights, not the same gradients or attributes
        for n, p in model.named_parameters():
            p.copy_(params[n])
    _restore_rng(rng)
    try:
        with _gradients(model, record.grads_again):
            target.step(x, y)
    except RuntimeError as exc:  # a graph kept from the first step, among others
        record.error = (2, str(exc).split("\n")[0])
    return record


@contextmanager
def _watching(model: nn.Module, modes: dict[str, bool], order: dict[str, int],
              outputs: list[torch.Tensor]) -> Iterator[None]:
    """Records each mode-dependent module's mode as it runs, the order in which modules
    that hold parameters are first called, and the model's outputs."""
    def pre(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, _args: Any) -> None:
            if isinstance(module, DROPOUTS + NORMS):
                modes[name] = module.training
            order.setdefault(name, len(order))
        return hook

    def out(_m: nn.Module, _i: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            outputs.append(output.detach().float().clone())

    hooks = [m.register_forward_pre_hook(pre(n)) for n, m in model.named_modules()
             if isinstance(m, DROPOUTS + NORMS) or any(True for _ in m.parameters(recurse=False))]
    hooks.append(model.register_forward_hook(out))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


@contextmanager
def _gradients(model: nn.Module, grads: dict[str, torch.Tensor]) -> Iterator[None]:
    """Each parameter's .grad as backward leaves it (before any clipping or step)."""
    def keep(name: str) -> Callable[[torch.Tensor], None]:
        def hook(p: torch.Tensor) -> None:
            if p.grad is not None:
                grads[name] = p.grad.detach().float().clone()
        return hook

    hooks = [p.register_post_accumulate_grad_hook(keep(n))
             for n, p in model.named_parameters() if p.requires_grad]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def _stats_moved(model: nn.Module, before: dict[str, torch.Tensor]) -> dict[str, bool]:
    """Per norm layer that keeps running statistics, whether the step changed its mean."""
    out = {}
    for name, m in model.named_modules():
        mean = getattr(m, "running_mean", None)
        if isinstance(m, NORMS) and isinstance(mean, torch.Tensor):
            key = f"{name}.running_mean" if name else "running_mean"
            out[name] = not torch.equal(mean, before[key])
    return out


def _buffers_changed(model: nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    """Buffers the step changed, other than norm layers' running statistics."""
    norm_buffers = {f"{n}.{b}" if n else b for n, m in model.named_modules()
                    if isinstance(m, NORMS) for b, _ in m.named_buffers(recurse=False)}
    return [n for n, b in model.named_buffers()
            if n not in norm_buffers and n in before and not torch.equal(b, before[n])]


def _tensor_attributes(model: nn.Module) -> dict[str, torch.Tensor]:
    """Tensors held as plain attributes of modules (neither parameters nor buffers)."""
    return {f"{n}.{k}" if n else k: v for n, m in model.named_modules()
            for k, v in vars(m).items() if isinstance(v, torch.Tensor)}


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _restore_rng(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def cost(samples: int) -> float:
    """Sample-passes of the check, a forward counted as a third of a training pass."""
    batch = min(samples, SAMPLES)
    return 2 * batch + (2 * batch + max(batch // 2, 1)) / 3
