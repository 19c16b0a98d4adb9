"""The metric registry: validation metrics by name, computed with torchmetrics.

An entry is a factory `(data) -> torchmetrics.Metric`, reported as `val_<name>`. Every
metric is updated with `(preds, target)` in one form per task kind (see `predictions`):
class probabilities and class indices; per-label probabilities and 0/1 integer labels;
predictions and targets in label units for regression. Each entry declares its
`direction` (maximize or minimize) and the task `kinds` it applies to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from stagetune.workers.errors import ConfigError
from stagetune.workers.registry import Registry

if TYPE_CHECKING:
    from torchmetrics import Metric

    from stagetune.workers.data import AnyDataset

MetricFactory = Callable[["AnyDataset"], "Metric"]

METRICS: Registry[MetricFactory] = Registry("metric")

DIRECTIONS = ("maximize", "minimize")
# The metric a task kind is judged by when nothing else is named.
DEFAULT_METRIC = {"classification": "accuracy", "multilabel": "accuracy", "regression": "rmse"}
CLASSES = ("classification", "multilabel")


def register_metric(name: str, *, direction: str, kinds: Sequence[str] | None = None
                    ) -> Callable[[MetricFactory], MetricFactory]:
    """Register `factory(data) -> torchmetrics.Metric` as metric `name` (reported as
    `val_<name>`); `direction` says whether higher (maximize) or lower (minimize) is better,
    `kinds` which task kinds it applies to (None: any)."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"metric '{name}': direction must be one of {', '.join(DIRECTIONS)} "
                          f"(got {direction!r})")
    return METRICS.register(name, direction=direction,
                            kinds=tuple(kinds) if kinds is not None else None)


def check_metric_kind(name: str, kind: str, dataset: str) -> None:
    kinds = METRICS.entry(name).info.get("kinds")
    if kinds is not None and kind not in kinds:
        raise ConfigError(f"metric '{name}' applies to {' or '.join(kinds)} tasks; dataset "
                          f"'{dataset}' is {kind}")


def predictions(data: AnyDataset, out: torch.Tensor, y: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The (preds, target) every metric is updated with, from the model's output. Metrics
    get probabilities, never logits: torchmetrics guesses logits from values outside
    [0, 1], which a batch of small logits would fool."""
    out = out.float()
    if data.task == "classification":
        return out.softmax(-1), y
    if data.task == "multilabel":
        return out.sigmoid(), y.long()
    return (out.squeeze(-1) * data.target_std + data.target_mean,
            y.float() * data.target_std + data.target_mean)


class Scorer:
    """Accumulates a loss and metrics over batches; `compute` gives `val_loss` and
    `val_<name>` for each metric. Sums stay on the device: one sync at the end."""

    def __init__(self, data: AnyDataset, loss: Callable[..., torch.Tensor], names: Iterable[str],
                 device: torch.device | str = "cpu") -> None:
        from torchmetrics import MetricCollection  # loaded where metrics are computed

        self.data, self.loss = data, loss
        self.metrics = MetricCollection({n: build_metric(n, data) for n in names},
                                        prefix="val_", compute_groups=False).to(device)
        self.total = torch.zeros((), device=device)
        self.count = 0

    def update(self, out: torch.Tensor, y: torch.Tensor) -> None:
        out = out.float()
        self.total += self.loss(out, y).detach() * len(y)
        self.metrics.update(*predictions(self.data, out.detach(), y))
        self.count += len(y)

    def compute(self) -> dict[str, float]:
        scores = {"val_loss": float(self.total) / max(self.count, 1)}
        if self.count:
            scores |= {k: float(v) for k, v in self.metrics.compute().items()}
        return scores


def build_metric(name: str, data: AnyDataset) -> Metric:
    check_metric_kind(name, data.task, data.name)
    metric = METRICS.get(name)(data)
    from torchmetrics import Metric

    if not isinstance(metric, Metric):
        raise ConfigError(f"metric '{name}': its factory must return a torchmetrics.Metric "
                          f"(got {type(metric).__name__})")
    return metric


# The built-ins. validate_args is off: the split has checked the labels already, and each
# check costs a device sync per batch.
_FAST: dict[str, Any] = {"validate_args": False}


@register_metric("accuracy", direction="maximize", kinds=CLASSES)
def accuracy(data: AnyDataset) -> Metric:
    """The share of right answers: of samples (classes) or of label decisions (multi-label)."""
    from torchmetrics import classification as tc

    if data.task == "multilabel":
        return tc.MultilabelAccuracy(num_labels=data.num_classes, average="micro", **_FAST)
    return tc.MulticlassAccuracy(num_classes=data.num_classes, average="micro", **_FAST)


@register_metric("top5_accuracy", direction="maximize", kinds=("classification",))
def top5_accuracy(data: AnyDataset) -> Metric:
    """The share of samples whose class is among the five likeliest (all, with fewer classes)."""
    from torchmetrics import classification as tc

    return tc.MulticlassAccuracy(num_classes=data.num_classes, top_k=min(5, data.num_classes),
                                 average="micro", **_FAST)


@register_metric("macro_f1", direction="maximize", kinds=CLASSES)
def macro_f1(data: AnyDataset) -> Metric:
    """F1 per class (or label), averaged with equal weights."""
    from torchmetrics import classification as tc

    if data.task == "multilabel":
        return tc.MultilabelF1Score(num_labels=data.num_classes, average="macro", **_FAST)
    return tc.MulticlassF1Score(num_classes=data.num_classes, average="macro", **_FAST)


@register_metric("auroc", direction="maximize", kinds=CLASSES)
def auroc(data: AnyDataset) -> Metric:
    """Area under the ROC curve, one-vs-rest per class (or per label), macro-averaged."""
    from torchmetrics import classification as tc

    if data.task == "multilabel":
        return tc.MultilabelAUROC(num_labels=data.num_classes, average="macro", **_FAST)
    return tc.MulticlassAUROC(num_classes=data.num_classes, average="macro", **_FAST)


@register_metric("rmse", direction="minimize", kinds=("regression",))
def rmse(data: AnyDataset) -> Metric:
    """Root mean squared error, in label units."""
    from torchmetrics import MeanSquaredError

    return MeanSquaredError(squared=False)


@register_metric("mae", direction="minimize", kinds=("regression",))
def mae(data: AnyDataset) -> Metric:
    """Mean absolute error, in label units."""
    from torchmetrics import MeanAbsoluteError

    return MeanAbsoluteError()


@register_metric("r2", direction="maximize", kinds=("regression",))
def r2(data: AnyDataset) -> Metric:
    """Coefficient of determination: 1 is perfect, 0 is predicting the mean."""
    from torchmetrics import R2Score

    return R2Score()
