"""Init check: is the loss before any update what a model that knows nothing should get?

It also walks the layers once: activation std per layer on the forward pass and
the weight-gradient norm per layer on the backward pass, so that vanishing or
exploding signals through depth show up before a single step is taken. The same pass
names quieter causes (`workers.probes._causes`), each its own sentence: outputs that
are already probabilities, units a ReLU never turns on, a first layer whose activations
show unnormalised inputs, or that is the same for every sample (the input is not read),
no gradient at all (frozen or detached), an lr of 0, a loss that rewards large outputs.
The activation and gradient scales through depth are read against the same architecture
at a standard init (`workers.probes._reference`). Last, two steps of the loop's own
training step and three evaluations check the step's invariants
(`workers.probes._step_findings`): what leaks from one step to the next, which layers do
not learn, modes, and whether evaluation is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from stagetune.workers.config import ModelConfig
from stagetune.workers.data import AnyDataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.losses import loss_fn
from stagetune.workers.models import count_parameters
from stagetune.workers.objective import initial_loss, loss_name
from stagetune.workers.probes import _causes as causes
from stagetune.workers.probes._common import ProbeSetup, option, prepare, verdict
from stagetune.workers.probes._init_fixes import (
    activation_family,
    affine_cost,
    best_loss_fix,
    is_affine,
    loss_fix_sentence,
    loss_fixes,
)
from stagetune.workers.probes._loop_step import loop_step
from stagetune.workers.probes._reference import against_reference, reference_scales
from stagetune.workers.probes._signals import (
    LAYERS,
    Record,
    are_probabilities,
    gradient_state,
    recording,
)
from stagetune.workers.probes._step_findings import check_step
from stagetune.workers.probes._step_invariants import cost as step_cost
from stagetune.workers.request import TrialRequest, TrialResult

OPTIONS = ("batches",)
LOSS_OK, LOSS_WARN = 1.5, 3.0  # allowed ratio to the expected loss, either way
GRAD_OK, GRAD_WARN = 1e2, 1e4  # allowed ratio of first- to last-layer gradient norm


def init_check(request: TrialRequest) -> TrialResult:
    batches = option(request, "batches", 4, OPTIONS)
    setup = prepare(request)
    data, model = setup.data, setup.model
    x, y = data.sample("train", batches * setup.train.batch_size, setup.generator)
    x, y = x.to(setup.device), y.to(setup.device)
    loss_used = loss_name(data, request.task.loss)
    criterion = loss_fn(data, loss=loss_used)
    loss, record, probabilities, out = _measure(model, criterion, x, y,
                                                setup.train.batch_size, loss_used)
    detached = not loss.requires_grad
    if not detached:  # a frozen or detached model has no gradient to measure
        loss.backward()
    grads = {name: float(m.weight.grad.norm()) for name, m in model.named_modules()
             if isinstance(m, LAYERS) and m.weight.grad is not None}

    value = loss.item()
    expected, stated_by = initial_loss(data, request.task.loss)
    ratio_to_expected = None if expected is None else value / expected
    first = record.first_layer()
    scale = None if first is None else causes.input_scale(
        first[0], first[1], float(x.float().std()),
        ratio_to_expected is not None and ratio_to_expected > LOSS_OK, setup.arch)
    cause, loss_figures = _loss_cause(value, expected, out, y, criterion, loss_used,
                                      list(data.label_prior) if data.task != "regression"
                                      else [], scale is not None)
    status, message = judge_initial_loss(
        value, expected, loss_used, _expected_what(loss_used, stated_by, data), cause=cause)
    unbounded = causes.rewards_large_outputs(criterion, out, y, loss_used) \
        if data.task == "classification" and math.isfinite(value) else None
    if unbounded is not None:  # its sentence says why the value is off; nothing else does
        status, message = "passed", ""
    if "prior_bias" in loss_figures and status == "failed":
        status = "warned"  # a healthy net at a standard init: training learns the prior
    grad_values = list(grads.values())
    ratio = grad_values[0] / grad_values[-1] if len(grad_values) > 1 and grad_values[-1] else 1.0
    family = activation_family(model, setup.arch)
    grad_status, grad_message = judge_gradients(ratio, family)
    findings = causes.collect([
        causes.probabilities(loss_used, data.num_classes) if probabilities else None,
        causes.no_gradient(*gradient_state(model), detached),
        causes.zero_lr(setup.train),
        causes.dead_units(record.dead_share(), setup.arch),
        causes.input_ignored(record.sample_spread, record.activation_std,
                             float(x[-setup.train.batch_size:].float().std(0).mean())),
        scale, unbounded])
    batch = setup.train.batch_size
    reference = None if detached or setup.arch.transfer != "none" else \
        reference_scales(model, x[:batch], y[:batch], criterion)
    reference_samples = min(len(x), batch) if reference else 0
    scale_found, scale_figures = against_reference(record.activation_std, grads, reference)
    findings += causes.collect([scale_found])
    step_found, step_figures, step_samples = _step_check(setup, request, x, y, detached)
    findings += step_found
    grad_fixes = gradient_fixes(ratio, setup.arch, family)
    if ratio < 1 / GRAD_OK and any(f.cause in ("dead_units", "zero_gradients", "signal_scale",
                                               "input_ignored") for f in findings):
        grad_message, grad_fixes = (f"Gradients vanish through depth (first layer {ratio:.1e}x "
                                    "the last), because of the cause below."), []
    status = causes.worst(status, grad_status, *(f.status for f in findings))
    message = " ".join(m for m in [message, grad_message, *(f.sentence for f in findings)] if m)
    affine = is_affine(model, x)  # last: its forward passes leave no trace on the checks
    result = verdict(status, message,
                     epochs_equivalent=(len(x) + step_samples + reference_samples
                                        + affine_cost()) / data.train_size,
                     loss=value,
                     loss_name=loss_used, expected_loss=expected, loss_ratio=ratio_to_expected,
                     activation_std=record.activation_std, dead_units=record.dead_share(),
                     grad_norm=grads, grad_ratio_first_to_last=ratio, activations=family,
                     affine=affine, **loss_figures,
                     **scale_figures, **step_figures, **causes.figures(findings, grad_fixes))
    result.parameters = count_parameters(model)
    return result


def _step_check(setup: ProbeSetup, request: TrialRequest, x: torch.Tensor, y: torch.Tensor,
                detached: bool) -> tuple[list[causes.Finding], dict[str, Any], float]:
    """The training step's invariants on the loop's own step (workers.probes._step_findings),
    their figures and cost in samples; none where nothing can train (said above)."""
    if detached or gradient_state(setup.model)[0] == 0:
        return [], {}, 0.0
    try:
        with loop_step(setup, request) as target:
            found, figures = check_step(target, x, y)
    except ConfigError:  # a knob the loop refuses (batch larger than the data): training says so
        return [], {}, 0.0
    return found, figures, step_cost(len(x))


def _measure(model: nn.Module, criterion: Callable[..., torch.Tensor], x: torch.Tensor,
             y: torch.Tensor, bs: int, loss: str
             ) -> tuple[torch.Tensor, Record, bool, torch.Tensor]:
    """The mean loss over batches of `bs` in train mode (still in the graph), what the
    layers showed on the way, whether every batch's outputs were probabilities, and the
    outputs (detached), on which fixes are tried."""
    model.train()
    losses, outs, probabilities = [], [], True
    with recording(model) as record:
        for i in range(0, len(x), bs):
            record.new_forward()
            out = model(x[i:i + bs]).float()
            probabilities = probabilities and are_probabilities(out, loss)
            losses.append(criterion(out, y[i:i + bs]))
            outs.append(out.detach())
    return torch.stack(losses).mean(), record, probabilities, torch.cat(outs)


def _loss_cause(value: float, expected: float | None, out: torch.Tensor, y: torch.Tensor,
                criterion: Callable[..., torch.Tensor], loss: str, prior: list[float],
                input_scale: bool) -> tuple[str | None, dict[str, Any]]:
    """Why the initial loss is too high, from the fix that, applied to the measured
    outputs, brings it closest to the expected loss (`workers.probes._init_fixes`); the
    unnormalised inputs when a finding below names them. None: no fix helps, said so."""
    if expected is None or not math.isfinite(value) or value <= LOSS_OK * expected:
        return None, {}
    if input_scale:
        return "the inputs are not normalised (below)", {}
    fix = best_loss_fix(value, expected, loss_fixes(out, y, criterion, loss, prior))
    if fix is None:
        return ("neither a bias at the label prior nor smaller outputs brings it down: check "
                "that the loss receives the model's raw outputs and the right labels"), {}
    figures: dict[str, Any] = {"loss_with_fix": fix.loss}
    if fix.kind == "prior_bias":
        figures["prior_bias"] = fix.bias
    return loss_fix_sentence(fix, expected, prior), figures


def _expected_what(loss: str, stated_by: str, data: AnyDataset) -> str:
    """What the expected loss is, in words that name the loss."""
    if stated_by == "dataset":
        return f"the dataset's own expected {loss}"
    classes = data.num_classes
    return {
        "cross_entropy": f"the cross-entropy of the label prior (ln {classes} = "
                         f"{math.log(max(classes, 1)):.3g} if balanced)",
        "bce_with_logits": "the binary cross-entropy of each label's prior, averaged over the "
                           f"{classes} labels (ln 2 = 0.693 at 50%)",
        "mse": "the label variance (MSE of predicting the mean)",
        "huber": "the Huber loss of predicting the mean",
    }.get(loss, f"the {loss} loss of a model that knows nothing")


def judge_initial_loss(value: float, expected: float | None, loss: str,
                       what: str, cause: str | None = None) -> tuple[str, str]:
    """The verdict on the initial loss; `cause`, when a measurement names why the loss is
    too high, replaces the generic fix."""
    if not math.isfinite(value):
        return "failed", "The initial loss is not finite: check the inputs, labels and loss."
    if expected is None:
        return "passed", (f"Initial {loss} loss {value:.3g}, not judged: {what} is not stated; "
                          "give register_loss an expected=fn(data) (or the dataset an "
                          "expected_loss) to have it checked.")
    ratio = value / expected
    base = f"Initial {loss} loss {value:.3g} against an expected {expected:.3g}, {what}"
    if 1 / LOSS_OK <= ratio <= LOSS_OK:
        return "passed", f"{base}: as it should be."
    if ratio > 1:
        fix = cause or ("the outputs are too large at initialisation; scale down the last "
                        "layer's weights or use a standard init")
        return ("warned" if ratio <= LOSS_WARN else "failed"), f"{base} is {ratio:.1f}x too high: {fix}."
    fix = "the model predicts the labels before training; look for labels leaking into inputs"
    return ("warned" if ratio >= 1 / LOSS_WARN else "failed"), f"{base} is {1 / ratio:.1f}x too low: {fix}."


def judge_gradients(ratio: float, family: str = "rectifier") -> tuple[str, str]:
    """The verdict on the ratio of the first layer's gradient norm to the last one's; the
    advice for vanishing gradients follows the activations (`family`)."""
    if 1 / GRAD_OK <= ratio <= GRAD_OK:
        return "passed", ""
    status = "warned" if 1 / GRAD_WARN <= ratio <= GRAD_WARN else "failed"
    if ratio < 1:
        if family == "saturating":
            return status, (f"Gradients vanish through depth (first layer {ratio:.1e}x the "
                            "last): the saturating activations (sigmoid, tanh) shrink the "
                            "gradient at every layer; use a non-saturating activation (ReLU), "
                            "or xavier init, and add normalisation or skip connections.")
        return status, (f"Gradients vanish through depth (first layer {ratio:.1e}x the last): "
                        "add normalisation or skip connections, or use kaiming init.")
    return status, (f"Gradients explode through depth (first layer {ratio:.1e}x the last): "
                    "add normalisation, lower the init scale or clip gradients.")


def gradient_fixes(ratio: float, arch: ModelConfig, family: str = "rectifier"
                   ) -> list[dict[str, Any]]:
    """Knob edits for gradients that vanish or explode through depth; the init and
    activation edits follow the model's activations (`family`)."""
    if 1 / GRAD_OK <= ratio <= GRAD_OK:
        return []
    fixes = []
    if arch.norm == "none":
        fixes.append(causes.fix("normalisation keeps each layer's signal near unit scale",
                                norm="batch"))
    if ratio >= 1:
        return [*fixes, causes.fix("clipping bounds each step while the scale is off",
                                   grad_clip=1.0)]
    if not arch.residual:
        fixes.append(causes.fix("skip connections carry the gradient past each block",
                                residual=True))
    if family == "saturating":
        if arch.activation in ("sigmoid", "tanh"):
            fixes.append(causes.fix("a rectifier does not saturate, so it passes the gradient "
                                    "unshrunk where it is on", activation="relu"))
        if arch.init == "default":
            fixes.append(causes.fix("xavier init keeps the signal's scale through sigmoid and "
                                    "tanh layers", init="xavier"))
    elif arch.init == "default":
        fixes.append(causes.fix("kaiming init keeps the gradient's scale through ReLU layers",
                                init="kaiming"))
    return fixes
