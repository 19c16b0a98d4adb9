"""The yardstick for the init check's scales through depth: the same architecture at a
standard initialisation.

The init check records, per weight layer, the activation std on the forward pass and
the weight-gradient norm on the backward pass. On their own those figures say little:
a ReLU net halves its signal layer by layer at PyTorch's default init and is fine. So
the model is copied, every module that has `reset_parameters` is reset (PyTorch's own
initialisation, per layer type), and the copy runs the same batch. What is compared is
the drift through depth, last hidden weight layer over first, for activations and for
gradients: scale-free, so a normalised net whose weights are merely smaller (its
normalisation undoes them) shows the same drift as its reference. The output layer is left
out: a small head init is deliberate (a transformer's std 0.02 head drifted 0.09x against
its reference's 0.97x, with the head counted: a false alarm in tests/e2e).

**Rule.** The model's drift differs from the reference's by more than DRIFT (10x) either
way: its initialisation, or a layer that scales its input, shrinks or inflates the
signal where a standard init of the same layers keeps it. Not judged: fewer than 3 hidden
weight layers, a pretrained model (transfer: its weights are meant to differ), or a model that
cannot be copied or reset.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from stagetune.workers.probes._causes import Finding
from stagetune.workers.probes._signals import LAYERS, recording

DRIFT = 10.0
MIN_LAYERS = 3


def reference_scales(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     criterion: Callable[..., torch.Tensor]
                     ) -> tuple[dict[str, float], dict[str, float]] | None:
    """Activation std and weight-gradient norm per weight layer of `model`'s copy at a
    standard init, on (x, y); None where it cannot be made."""
    try:
        twin = copy.deepcopy(model)
    except (copy.Error, RuntimeError, TypeError):  # a module that holds what cannot be copied
        return None
    resets: list[Callable[[], object]] = [
        getattr(m, "reset_parameters") for m in twin.modules()  # noqa: B009  (typed as Any)
        if callable(getattr(m, "reset_parameters", None))]
    if not resets:
        return None
    with torch.no_grad(), torch.random.fork_rng():  # the caller's random state untouched
        for reset in resets:
            reset()
    twin.train()
    twin.zero_grad(set_to_none=True)
    with recording(twin) as record:
        record.new_forward()
        loss = criterion(twin(x).float(), y)
    if not loss.requires_grad:
        return None
    loss.backward()
    grads = {name: float(m.weight.grad.norm()) for name, m in twin.named_modules()
             if isinstance(m, LAYERS) and m.weight.grad is not None}
    return record.activation_std, grads


def drift(values: dict[str, float], layers: list[str]) -> float | None:
    """Last layer's value over the first's, among `layers`; None if either is zero."""
    first, last = values[layers[0]], values[layers[-1]]
    return last / first if first > 0 and last > 0 and math.isfinite(last / first) else None


def against_reference(activations: dict[str, float], grads: dict[str, float],
                      reference: tuple[dict[str, float], dict[str, float]] | None
                      ) -> tuple[Finding | None, dict[str, Any]]:
    """The `signal_scale` finding, and the figures it read."""
    if reference is None:
        return None, {}
    ref_act, ref_grad = reference
    said, figures = [], {}
    for what, mine, theirs in (("activations", activations, ref_act),
                               ("gradients", grads, ref_grad)):
        # the output layer left out: a small or zero init of the head is deliberate
        # (transformers' std 0.02, zero-init heads), and scales every layer's gradient alike
        layers = [n for n in mine if n in theirs][:-1]
        if len(layers) < MIN_LAYERS:
            continue
        own, standard = drift(mine, layers), drift(theirs, layers)
        if own is None or standard is None:
            continue
        figures[what] = {"drift": own, "reference_drift": standard}
        ratio = own / standard
        if ratio < 1 / DRIFT or ratio > DRIFT:
            way = "shrink" if ratio < 1 else "grow"
            said.append(f"the {what} {way} to {own:.2g}x from the first weight layer to the "
                        f"last hidden one, where a standard init of the same layers gives "
                        f"{standard:.2g}x")
    if not said:
        return None, {"signal_drift": figures} if figures else {}
    sentence = ("Through depth, " + "; ".join(said) + ": the model's initialisation, or a layer "
                "that scales its input, changes the signal's scale layer by layer. Use a "
                "standard init (init: kaiming for ReLU layers, xavier for tanh or sigmoid, or "
                "the layers' own reset_parameters), or look for a layer that multiplies by a "
                "constant.")
    return Finding("signal_scale", "warned", sentence), {"signal_drift": figures}
