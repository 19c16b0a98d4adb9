"""Init check: is the loss before any update what a model that knows nothing should get?

It also walks the layers once: activation std per layer on the forward pass and
the weight-gradient norm per layer on the backward pass, so that vanishing or
exploding signals through depth show up before a single step is taken.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from workers.data import AnyDataset
from workers.models import count_parameters
from workers.objective import initial_loss, loss_name
from workers.probes._common import option, prepare, verdict
from workers.request import TrialRequest, TrialResult
from workers.train import loss_fn

OPTIONS = ("batches",)
LOSS_OK, LOSS_WARN = 1.5, 3.0  # allowed ratio to the expected loss, either way
GRAD_OK, GRAD_WARN = 1e2, 1e4  # allowed ratio of first- to last-layer gradient norm


def init_check(request: TrialRequest) -> TrialResult:
    batches = option(request, "batches", 4, OPTIONS)
    setup = prepare(request)
    data, model = setup.data, setup.model
    x, y = data.sample("train", batches * setup.train.batch_size, setup.generator)
    x, y = x.to(setup.device), y.to(setup.device)
    n = len(x)

    layers = [(name, m) for name, m in model.named_modules()
              if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    stds: dict[str, float] = {}
    hooks = [m.register_forward_hook(
        lambda _m, _i, out, name=name: stds.__setitem__(name, float(out.detach().float().std())))
        for name, m in layers]
    model.train()
    loss_used = loss_name(data, request.task.loss)
    criterion = loss_fn(data, loss=loss_used)
    losses = [criterion(model(x[i:i + setup.train.batch_size]).float(),
                        y[i:i + setup.train.batch_size])
              for i in range(0, n, setup.train.batch_size)]
    loss = torch.stack(losses).mean()
    if loss.requires_grad:  # a fully frozen model has no gradient to measure
        loss.backward()
    for h in hooks:
        h.remove()
    grads = {name: float(m.weight.grad.norm()) for name, m in layers if m.weight.grad is not None}

    value = loss.item()
    expected, stated_by = initial_loss(data, request.task.loss)
    status, message = _judge_loss(value, expected, loss_used,
                                  _expected_what(loss_used, stated_by, data))
    grad_values = list(grads.values())
    ratio = grad_values[0] / grad_values[-1] if len(grad_values) > 1 and grad_values[-1] else 1.0
    grad_status, grad_message = _judge_gradients(ratio)
    if _rank(grad_status) > _rank(status):
        status = grad_status
    if grad_message:
        message = f"{message} {grad_message}"
    result = verdict(status, message, epochs_equivalent=n / data.train_size, loss=value,
                     loss_name=loss_used, expected_loss=expected,
                     loss_ratio=None if expected is None else value / expected,
                     activation_std=stds, grad_norm=grads, grad_ratio_first_to_last=ratio)
    result.parameters = count_parameters(model)
    return result


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


def _judge_loss(value: float, expected: float | None, loss: str,
                what: str) -> tuple[str, str]:
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
        fix = ("the outputs are too large at initialisation; scale down the last layer's "
               "weights or use a standard init")
        return ("warned" if ratio <= LOSS_WARN else "failed"), f"{base} is {ratio:.1f}x too high: {fix}."
    fix = "the model predicts the labels before training; look for labels leaking into inputs"
    return ("warned" if ratio >= 1 / LOSS_WARN else "failed"), f"{base} is {1 / ratio:.1f}x too low: {fix}."


def _judge_gradients(ratio: float) -> tuple[str, str]:
    if 1 / GRAD_OK <= ratio <= GRAD_OK:
        return "passed", ""
    status = "warned" if 1 / GRAD_WARN <= ratio <= GRAD_WARN else "failed"
    if ratio < 1:
        return status, (f"Gradients vanish through depth (first layer {ratio:.1e}x the last): "
                        "add normalisation or skip connections, or use kaiming init.")
    return status, (f"Gradients explode through depth (first layer {ratio:.1e}x the last): "
                    "add normalisation, lower the init scale or clip gradients.")


def _rank(status: str) -> int:
    return ("passed", "warned", "failed").index(status)
