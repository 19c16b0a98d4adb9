"""Samples as scikit-learn takes them: one float64 row per sample, NaN read as 0 (the data
check reports NaN itself; the quick models only need to run)."""

from __future__ import annotations

import numpy as np
import torch


def as_matrix(x: torch.Tensor, rows: int | None = None) -> np.ndarray:
    """The first `rows` samples of `x` (all when None), each flattened into one row."""
    x = x[:rows]
    return x.reshape(len(x), -1).double().nan_to_num(0.0).numpy()
