"""What every dataset hands the training loop: normalised tensors and their facts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

TaskKind = Literal["classification", "regression"]


@dataclass(frozen=True)
class RawData:
    """What a dataset factory returns: its training arrays, before splitting.

    An official test split is never returned: validation is carved from `x`, so the
    test split stays untouched by tuning.
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

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.task == "classification" else 1

    @property
    def expected_initial_loss(self) -> float:
        """The loss of a model that knows nothing: prior entropy, or label variance for MSE."""
        if self.task == "regression":
            return float(self.y_train.var(unbiased=False))
        return -sum(p * math.log(p) for p in self.label_prior if p > 0)

    def describe(self) -> str:
        kind = f"{self.num_classes} classes" if self.task == "classification" else "regression"
        return (
            f"{self.name}: {len(self.x_train)} train / {len(self.x_val)} validation, "
            f"input {self.input_shape}, {kind}"
        )
