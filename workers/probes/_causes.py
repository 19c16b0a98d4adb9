"""Named causes: what a probe's measurements say is wrong, each a sentence with its
numbers and a fix, and, where the fix is a knob, that edit as data.

A fix as data is `{"set": {knob: value}, "why": sentence}`; a value may be a bound
(`{"lr": {"high": 1e-3}}`) and `when` may name the case it is for
(`{"optimizer": "sgd"}`). Stages carry them on to the API (`StageOut.fixes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from stagetune.workers.config import ModelConfig, TrainConfig

# Share of a rectifier's units off for every sample of the batch. Narrow deep nets without
# normalisation lose up to ~45% of a 16-unit layer at init and still train (digits, mnist1d,
# wine, diabetes, breast_cancer at width 16, depth 4, norm none): half is a warning; a layer
# wholly off passes no gradient to anything below it.
DEAD_WARN, DEAD_FAIL = 0.5, 1.0
SCALE_HIGH = 10.0  # first-layer activation std; ~0.6 for unit-variance inputs at default init
STATUSES = ("passed", "warned", "failed")
# A fresh lr when the spec's is 0: a usual starting point per optimizer; the LR probe refines it.
START_LR = {"sgd": 0.1, "sgd_nesterov": 0.1, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}


@dataclass
class Finding:
    cause: str  # a short name: probabilities, dead_units, input_scale, zero_gradients, ...
    status: str
    sentence: str
    fixes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"cause": self.cause, "status": self.status, "sentence": self.sentence}


def worst(*statuses: str) -> str:
    return max(statuses, key=STATUSES.index)


def fix(why: str, when: dict[str, Any] | None = None, **knobs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"set": knobs, "why": why}
    if when:
        out["when"] = when
    return out


def probabilities(loss: str, classes: int) -> Finding:
    floor = loss_floor(classes) if loss == "cross_entropy" else None
    kind = "softmax" if loss == "cross_entropy" else "sigmoid"
    shape = ("rows in [0, 1] that sum to 1" if loss == "cross_entropy"
             else "every value in [0, 1]")
    below = "" if floor is None else (f"; on {classes} classes it cannot go below "
                                      f"ln({classes} - 1 + e) - 1 = {floor:.3g}")
    return Finding("probabilities", "failed",
                   f"The model outputs probabilities ({shape}), but the {loss} loss expects "
                   f"logits and applies its own {kind}{below}: remove the final {kind}.")


def input_ignored(record_spread: dict[str, float], activation_std: dict[str, float],
                  input_spread: float) -> Finding | None:
    """The first weight layer gives every sample of the batch the same output although the
    inputs differ: the model does not read its input."""
    first = next(iter(record_spread), None)
    if first is None or input_spread <= 0:
        return None
    if record_spread[first] > 1e-6 * max(activation_std.get(first, 0.0), 1e-12):
        return None
    return Finding("input_ignored", "failed", (
        f"The first weight layer ('{first}') gives every sample the same output although the "
        "inputs differ: the model does not read its input (it multiplies it by zero, "
        "replaces it with a constant, or reads a buffer in its place), so nothing it learns "
        "depends on the sample. Pass the input through to the first layer."))


SHIFT = 10.0  # added to every class's output to see whether the loss rewards it


def rewards_large_outputs(criterion: Any, out: torch.Tensor, y: torch.Tensor, loss: str
                          ) -> Finding | None:
    """A loss over one label per sample that falls when every class's output grows by the
    same amount. Softmax losses (cross-entropy, focal) and margin losses do not change: only
    differences between outputs matter. One that falls by half the shift or more has no
    minimum to train towards: nll_loss on raw outputs, the log_softmax missing."""
    with torch.no_grad():
        before, after = float(criterion(out, y)), float(criterion(out + SHIFT, y))
    if not (math.isfinite(before) and math.isfinite(after)) or after > before - SHIFT / 2:
        return None
    return Finding("rewards_large_outputs", "failed", (
        f"The {loss} loss falls from {before:.3g} to {after:.3g} when every output grows by "
        f"{SHIFT:g}: it rewards large outputs, not the right class, so training drives it "
        "towards minus infinity. nll_loss expects log-probabilities: put log_softmax before "
        "it, or use cross_entropy on the raw outputs."))


def loss_floor(classes: int) -> float:
    """The least cross-entropy of probabilities taken as logits: a one-hot output p
    scores -log(e / (e + C - 1)) = ln(C - 1 + e) - 1, about ln C - 1."""
    return math.log(classes - 1 + math.e) - 1


def dead_units(shares: dict[str, float], arch: ModelConfig | None) -> Finding | None:
    bad = {n: s for n, s in shares.items() if s >= DEAD_WARN}
    if not bad:
        return None
    status = "failed" if max(bad.values()) >= DEAD_FAIL else "warned"
    layers = ", ".join(f"'{n}' {s:.0%}" for n, s in
                       sorted(bad.items(), key=lambda kv: -kv[1])[:4])
    fixes = [fix("a leaky ReLU keeps a gradient for units that are off", activation="leaky_relu")]
    if arch is not None and arch.norm == "none":
        fixes.append(fix("a normalisation layer centres each unit's input, so it is on for "
                         "about half the batch", norm="batch"))
    return Finding("dead_units", status,
                   f"Dead units at initialisation: ReLU outputs are zero for every sample of "
                   f"the batch in {layers} of the units (by layer); they pass no gradient. Look for large "
                   "negative biases or inputs that are all negative, use a leaky ReLU, or "
                   "normalise before the activation.", fixes)


def input_scale(layer: str, std: float, input_std: float | None, loss_high: bool,
                arch: ModelConfig | None) -> Finding | None:
    if not std > SCALE_HIGH:
        return None
    where = (f" (the dataset's inputs have std {input_std:.3g}, so the model scales them up "
             "before its first layer, or that layer's weights start too large)"
             if input_std is not None and input_std < SCALE_HIGH / 2
             else "" if input_std is None else f" (the inputs' std is {input_std:.3g})")
    effect = ("" if loss_high else
              "; later layers absorb it, so the loss starts as it should, but the first "
              "layer's effective learning rate is off by the same factor")
    fixes = []
    if arch is not None and arch.norm == "none":
        fixes.append(fix("a normalisation layer after the first layer undoes the scale",
                         norm="batch"))
    return Finding("input_scale", "failed" if loss_high else "warned",
                   f"The inputs are not normalised: the first layer's activations ('{layer}') "
                   f"have std {std:.3g}, against about 0.6 for unit-variance inputs{where}"
                   f"{effect}; normalise the inputs (each feature to mean 0, std 1).", fixes)


def no_gradient(trainable: int, moving: int, detached: bool) -> Finding | None:
    if trainable == 0:
        return Finding("zero_gradients", "failed",
                       "No parameter requires a gradient: every weight is frozen, so nothing "
                       "can train; unfreeze them (requires_grad_(True)), or leave some layers "
                       "to train with transfer.")
    if detached:
        return Finding("zero_gradients", "failed",
                       f"The loss has no gradient although {trainable} parameter tensors "
                       "require one: the graph is detached between the weights and the loss "
                       "(a .detach(), .item(), numpy round trip or torch.no_grad in forward); "
                       "keep the forward pass differentiable.")
    if moving == 0:
        return Finding("zero_gradients", "failed",
                       f"Every gradient is zero: none of the {trainable} trainable parameter "
                       "tensors gets a signal from the loss (a detached graph, dead units or "
                       "a constant output); keep the forward pass differentiable.")
    return None


def zero_lr(train: TrainConfig) -> Finding | None:
    if train.lr > 0:
        return None
    start = START_LR[train.optimizer]
    return Finding("lr_zero", "failed",
                   f"The learning rate is 0: no step changes a weight. Set lr to a positive "
                   f"value (e.g. {start:g} for {train.optimizer}) or search it.",
                   [fix(f"a usual starting lr for {train.optimizer}; the LR probe narrows it",
                        lr=start)])


def collect(findings: list[Finding | None]) -> list[Finding]:
    return [f for f in findings if f is not None]


def figures(findings: list[Finding], fixes: list[dict[str, Any]] | None = None
            ) -> dict[str, Any]:
    """The probe figures that carry findings: `causes` and the knob `fixes`, deduplicated."""
    out: list[dict[str, Any]] = []
    for item in [f for finding in findings for f in finding.fixes] + (fixes or []):
        if item not in out:
            out.append(item)
    return {"causes": [f.as_dict() for f in findings], "fixes": out}
