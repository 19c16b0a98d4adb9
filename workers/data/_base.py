"""What every dataset hands the training loop: normalised tensors and their facts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

TaskKind = Literal["classification", "regression", "multilabel"]
TASK_KINDS: tuple[str, ...] = ("classification", "regression", "multilabel")


@dataclass(frozen=True)
class RawData:
    """What a dataset factory returns: its training arrays, before splitting.

    An official test split is never returned: validation is carved from `x`, so the
    test split stays untouched by tuning. `y` holds class indices (classification), numbers
    (regression) or, for multilabel, 0/1 values of shape (N, L): L yes/no labels a sample
    may have any number of.
    """

    x: np.ndarray
    y: np.ndarray
    task: TaskKind
    is_image: bool = False


@dataclass(frozen=True, eq=False)
class Dataset:
    """A seeded train/validation split, normalised with training statistics only.

    Inputs are float32 and already normalised; `mean` and `std` (broadcastable over
    one sample) undo that for augmentations that need raw pixel values. Regression
    targets are standardised too; `target_std` turns an RMSE back into label units.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    task: TaskKind
    num_classes: int
    label_prior: tuple[float, ...]
    mean: torch.Tensor
    std: torch.Tensor
    is_image: bool
    target_std: float = 1.0
    target_mean: float = 0.0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def train_size(self) -> int:
        return len(self.x_train)

    @property
    def val_size(self) -> int:
        return len(self.x_val)

    def sample(self, split: str = "train", n: int | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` items of `split` ('train' or 'val'; all when None): a seeded random draw with
        `generator`, else the first n (the split is in random order). The same call on a
        streamed dataset loads its sample, so probes read both kinds alike."""
        if split not in ("train", "val"):
            raise ValueError(f"sample: split must be 'train' or 'val' (got {split!r})")
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_val, self.y_val)
        if generator is None:
            return x[:n], y[:n]
        idx = torch.randperm(len(x), generator=generator)[:n]
        return x[idx], y[idx]

    @property
    def num_outputs(self) -> int:
        return 1 if self.task == "regression" else self.num_classes

    @property
    def expected_initial_loss(self) -> float:
        """The loss of a model that knows nothing, under the kind's default loss: the label
        prior's entropy (cross-entropy), the mean per-label entropy (BCE) or the label
        variance (MSE). `workers.losses.expected_loss` gives it for any other loss."""
        from stagetune.workers.losses import DEFAULT_LOSS, LOSSES  # the losses use this class

        return float(LOSSES.entry(DEFAULT_LOSS[self.task]).info["expected"](self))

    def describe(self) -> str:
        kind = {"classification": f"{self.num_classes} classes",
                "multilabel": f"{self.num_classes} labels"}.get(self.task, "regression")
        return (
            f"{self.name}: {len(self.x_train)} train / {len(self.x_val)} validation, "
            f"input {self.input_shape}, {kind}"
        )
