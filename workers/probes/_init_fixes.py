"""Fixes for what init_check measures, each derived from the measurement that calls for it
and checked against it before it is advised.

- A high initial loss: the candidate fixes are applied to the outputs already measured
  (a bias at the log label prior; the outputs scaled down, as smaller last-layer weights
  give), and only one that brings the loss toward its expected value is named.
- Gradients that vanish through depth: the advice follows the model's activations, read
  from its modules: rectifiers want kaiming init, saturating ones (sigmoid, tanh) xavier
  init or a rectifier.
- Whether the model is affine in its input (a linear model, as the baseline is), measured
  on the batch, so that no later judgement asks it to beat a model of its own class.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from stagetune.workers.config import ModelConfig

SATURATING = (nn.Sigmoid, nn.Tanh, nn.Hardsigmoid, nn.Hardtanh, nn.Softsign, nn.LogSigmoid)
RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU,
              nn.SiLU, nn.Mish, nn.Softplus)
# Outputs scaled to a tenth: what last-layer weights ten times smaller give, bias aside.
SHRINK = 0.1
# f(t a + (1 - t) b) against t f(a) + (1 - t) f(b), relative to the outputs' size: float32
# round-off through a few layers stays far below this; any nonlinearity is far above.
AFFINE_TOL = 1e-4


@dataclass(frozen=True)
class LossFix:
    """A fix for a high initial loss and the loss measured with it applied."""

    kind: str  # "prior_bias" or "shrink_outputs"
    loss: float
    bias: list[float] | None = None  # the last layer's bias, for "prior_bias"


def prior_bias(loss: str, prior: Sequence[float]) -> list[float] | None:
    """The output bias that makes a model that knows nothing predict the label prior: ln p
    per class for cross-entropy, the log-odds per label for a binary cross-entropy."""
    if not prior or min(prior) <= 0 or (loss == "bce_with_logits" and max(prior) >= 1):
        return None
    if loss == "cross_entropy":
        return [math.log(p) for p in prior]
    if loss == "bce_with_logits":
        return [math.log(p / (1 - p)) for p in prior]
    return None


def loss_fixes(out: torch.Tensor, y: torch.Tensor, criterion: Callable[..., torch.Tensor],
               loss: str, prior: Sequence[float]) -> list[LossFix]:
    """Each candidate fix applied to the measured outputs `out`, with the loss it gives."""
    found = []
    with torch.no_grad():
        bias = prior_bias(loss, prior)
        if bias is not None and out.shape[-1] == len(bias):
            shifted = out + torch.tensor(bias, dtype=out.dtype, device=out.device)
            found.append(LossFix("prior_bias", float(criterion(shifted, y)), bias))
        found.append(LossFix("shrink_outputs", float(criterion(SHRINK * out, y))))
    return found


def best_loss_fix(value: float, expected: float, fixes: list[LossFix]) -> LossFix | None:
    """The fix that brings the loss closest to `expected`, if it brings it closer at all
    (on the log scale, where too high and too low weigh alike)."""
    def gap(v: float) -> float:
        return abs(math.log(max(v, 1e-12) / expected))

    closer = [f for f in fixes if math.isfinite(f.loss) and gap(f.loss) < gap(value)]
    return min(closer, key=lambda f: gap(f.loss), default=None)


def loss_fix_sentence(fix: LossFix, expected: float, prior: Sequence[float]) -> str:
    """Why the loss is high and what to do, with the loss that doing it gave."""
    if fix.kind == "prior_bias":
        top = max(prior)
        shown = ", ".join(f"{b:.3g}" for b in (fix.bias or [])[:10])
        more = ", ..." if len(fix.bias or []) > 10 else ""
        return (f"the label prior is skewed (the largest class is {top:.0%} of the labels) and "
                "the outputs start near uniform; set the last layer's bias to the log prior "
                f"(ln p per class: {shown}{more}), which brings this batch's loss to "
                f"{fix.loss:.3g} against {expected:.3g}")
    return ("the outputs are too large at initialisation; scale down the last layer's weights "
            f"or use a standard init (outputs a tenth as large give {fix.loss:.3g} against "
            f"{expected:.3g})")


def activation_family(model: nn.Module, arch: ModelConfig | None) -> str:
    """"saturating" or "rectifier": the model's hidden activations, from its modules
    (a plugin model may ignore the activation knob), else from the knob."""
    saturating = sum(isinstance(m, SATURATING) for m in model.modules())
    rectifiers = sum(isinstance(m, RECTIFIERS) for m in model.modules())
    if saturating or rectifiers:
        return "saturating" if saturating > rectifiers else "rectifier"
    return "saturating" if arch is not None and arch.activation in ("sigmoid", "tanh") \
        else "rectifier"


AFFINE_SAMPLES = 8  # per half: any nonlinearity shows on a few samples


def affine_cost() -> float:
    """The check's cost in training samples: three forward passes of `AFFINE_SAMPLES`
    without a backward pass, about a third of a training step each."""
    return AFFINE_SAMPLES


def is_affine(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether the model, in evaluation mode, is an affine map of its input on a few
    samples: the output of a mix of two of them is the same mix of their outputs."""
    half = min(len(x) // 2, AFFINE_SAMPLES)
    if half == 0 or not torch.is_floating_point(x):
        return False
    a, b, t = x[:half], x[half:2 * half], 0.3
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            fa, fb, fm = (model(v).float() for v in (a, b, t * a + (1 - t) * b))
    finally:
        model.train(was_training)
    if fm.shape != fa.shape:
        return False
    scale = float(torch.cat([fa, fb]).abs().max()) or 1.0
    return bool(float((fm - (t * fa + (1 - t) * fb)).abs().max()) <= AFFINE_TOL * scale)
