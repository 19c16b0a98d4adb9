"""The loss registry: built-in losses by name, and a plugin's own.

An entry is the loss itself, a callable `(out, y) -> scalar tensor`: `out` is the model's
float output (N, num_outputs), `y` the batch's labels as the Dataset holds them (class
indices; standardised targets (N,); multi-label 0/1 floats (N, L)). A loss that takes a
`label_smoothing` keyword gets the trial's value. Each entry may say what a model that
knows nothing should score (`expected(data) -> float`, which the init check compares
with) and which task kinds it applies to (`kinds`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import functional as F

from stagetune.workers.errors import ConfigError
from stagetune.workers.objective import loss_name
from stagetune.workers.registry import Registry

if TYPE_CHECKING:
    from stagetune.workers.data import AnyDataset

LossFunction = Callable[..., torch.Tensor]
Expected = Callable[["AnyDataset"], float]

LOSSES: Registry[LossFunction] = Registry("loss")

# The loss a task kind trains with when neither the task nor its dataset names one.
DEFAULT_LOSS = {"classification": "cross_entropy", "multilabel": "bce_with_logits",
                "regression": "mse"}


def register_loss(name: str, *, expected: Expected | None = None,
                  kinds: Sequence[str] | None = None) -> Callable[[LossFunction], LossFunction]:
    """Register a loss `(out, y) -> scalar tensor` as `name`. `expected(data)` is the loss
    of a model that knows nothing (without it the init check cannot judge the loss value);
    `kinds` the task kinds it applies to (None: any)."""
    if expected is not None and not callable(expected):
        raise ConfigError(f"loss '{name}': expected must be a function of the dataset "
                          f"returning a float (got {expected!r})")
    return LOSSES.register(name, expected=expected,
                           kinds=tuple(kinds) if kinds is not None else None)


def resolve_loss(name: str, label_smoothing: float = 0.0) -> LossFunction:
    """The registered loss `name`, with `label_smoothing` bound where it takes it."""
    fn = LOSSES.get(name)
    if "label_smoothing" in _parameters(fn):
        return partial(fn, label_smoothing=label_smoothing)
    return fn


def loss_fn(data: AnyDataset, label_smoothing: float = 0.0,
            loss: str | None = None) -> LossFunction:
    """The loss to train with: `loss` (a registered name), else the dataset's declared
    one, else its kind's (cross_entropy, bce_with_logits, mse)."""
    name = loss_name(data, loss)
    check_loss_kind(name, data.task, data.name)
    return resolve_loss(name, label_smoothing)


def expected_loss(name: str, data: AnyDataset) -> float | None:
    """What loss `name` should be for a model that knows nothing; None if it does not say."""
    expected = LOSSES.entry(name).info.get("expected")
    return None if expected is None else float(expected(data))


def check_loss_kind(name: str, kind: str, dataset: str) -> None:
    kinds = LOSSES.entry(name).info.get("kinds")
    if kinds is not None and kind not in kinds:
        raise ConfigError(f"loss '{name}' applies to {' or '.join(kinds)} tasks; dataset "
                          f"'{dataset}' is {kind}: use {DEFAULT_LOSS[kind]} or a plugin's loss")


def _parameters(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # a builtin without a signature
        return set()


# Expected initial losses: a model that knows nothing predicts the label prior.

def prior_entropy(data: AnyDataset) -> float:
    """Cross-entropy of the label prior: ln C when the classes are balanced."""
    return -sum(p * math.log(p) for p in data.label_prior if p > 0)


def label_entropy(data: AnyDataset) -> float:
    """Binary cross-entropy of each label's prior, averaged over labels (ln 2 at 50%)."""
    terms = [-(p * math.log(p) + (1 - p) * math.log(1 - p)) if 0 < p < 1 else 0.0
             for p in data.label_prior]
    return sum(terms) / max(len(terms), 1)


def label_variance(data: AnyDataset) -> float:
    """MSE of predicting the mean: the targets' variance (about 1, as they are standardised)."""
    return float(data.y_train.float().var(unbiased=False))


def huber_of_spread(data: AnyDataset) -> float:
    """Huber loss of predicting the mean."""
    y = data.y_train.float()
    return float(F.huber_loss(y - y.mean(), torch.zeros_like(y)))


# The built-ins.

@register_loss("cross_entropy", expected=prior_entropy, kinds=("classification",))
def cross_entropy(out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Softmax cross-entropy over classes (label_smoothing applies)."""
    return F.cross_entropy(out, y, label_smoothing=label_smoothing)


@register_loss("bce_with_logits", expected=label_entropy, kinds=("multilabel",))
def bce_with_logits(out: torch.Tensor, y: torch.Tensor,
                    label_smoothing: float = 0.0) -> torch.Tensor:
    """Binary cross-entropy of each label's logit, averaged (label_smoothing applies)."""
    # Smoothing pulls each 0/1 target towards 0.5, as cross-entropy's pulls towards 1/C.
    target = y.float() * (1 - label_smoothing) + label_smoothing / 2
    return F.binary_cross_entropy_with_logits(out, target)


@register_loss("mse", expected=label_variance, kinds=("regression",))
def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error on the standardised targets."""
    return F.mse_loss(out.squeeze(-1), y)


@register_loss("huber", expected=huber_of_spread, kinds=("regression",))
def huber(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Huber loss (delta 1, in standard deviations of the target): robust to outliers."""
    return F.huber_loss(out.squeeze(-1), y)
