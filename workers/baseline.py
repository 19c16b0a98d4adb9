"""Baseline: the score of a linear model on the flattened inputs, which a network must beat.

Logistic regression for classification, ridge regression for regression (scikit-learn),
fitted on the same normalised train/validation split the training loop sees, so the
numbers compare directly with a trial's `val_accuracy` / `val_rmse` and `val_loss`.

The fit uses at most `MAX_TRAIN_ROWS` training rows (10,000): a seeded, stratified
subsample of the dataset's own training arrays, so that Fashion-MNIST-size data takes
seconds, not minutes. The validation split is always used whole. The regularisation
strength (C, alpha) is picked from a short grid on the validation split, the split a
network's best trial and epoch are picked on, so neither side is favoured.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from workers.data import Dataset, load_dataset
from workers.knobs import parse_task_params
from workers.errors import ConfigError
from workers.request import TrialRequest, TrialResult

log = logging.getLogger(__name__)

# lbfgs on 10,000 Fashion-MNIST rows (784 features) takes about 25 s for the whole C
# path on one busy core; on more rows the baseline would cost more than the network's coarse
# stage, and its score barely moves (a linear model saturates long before 48,000 rows).
MAX_TRAIN_ROWS = 10_000
# Regularisation strengths tried, strongest first so each fit warm-starts the next.
# One fixed C is unfair somewhere: C=1 overfits 10,000 Fashion-MNIST rows (0.81 against
# 0.85 at C=0.01) while C=0.01 underfits digits (0.94 against 0.97 at C=1).
LOGISTIC_C = (0.01, 0.1, 1.0)
RIDGE_ALPHA = (0.1, 1.0, 10.0, 100.0)
# Per C: enough for lbfgs to converge on the small datasets; on Fashion-MNIST the
# validation score has settled long before the last digits of the loss have.
MAX_ITER = 300
OPTIONS = ("max_rows",)


def run_baseline(request: TrialRequest) -> TrialResult:
    """Fit the linear baseline for `request.task.dataset`; the model and params are unused.

    Training rows are capped at `MAX_TRAIN_ROWS` (option `max_rows`), subsampled with
    `request.seed`, stratified by class for classification.
    """
    max_rows = _max_rows(request)
    task = request.task
    data = load_dataset(task.dataset, parse_task_params(task, request.params).dataset_options)
    x, y = _subsample(data, max_rows, request.seed)
    x_val, y_val = _flat(data.x_val.numpy()), data.y_val.numpy()
    # BLAS gets the thread budget the worker gave torch: OpenBLAS threads that outnumber
    # the free cores spin against each other (lbfgs on Fashion-MNIST: 27 s on one
    # thread, over 5 minutes on two of a busy 2-core machine).
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        if data.task == "classification":
            final = _logistic(data, x, y, x_val, y_val)
            # chance level: the accuracy of always answering the commonest validation class
            final["chance"] = float(np.bincount(y_val).max() / len(y_val))
            what = "logistic regression"
        else:
            final = _ridge(data, x, y, x_val, y_val)
            what = "ridge regression"
    metric = final["objective"]
    value = f"{final[metric]:.3f}" if metric == "val_accuracy" else f"{final[metric]:.3g}"
    capped = len(x) < len(data.x_train)
    rows = f" (fitted on {len(x):,} of {len(data.x_train):,} training rows)" if capped else ""
    message = (f"A linear model ({what} on the flattened inputs) reaches {metric} "
               f"{value}{rows}: the score a network must beat.")
    log.info("baseline on %s: %s", task.dataset, message)
    return TrialResult("passed", final=final, message=message)


def _max_rows(request: TrialRequest) -> int:
    unknown = sorted(set(request.options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"baseline has no option {', '.join(repr(u) for u in unknown)}; "
                          f"allowed: {', '.join(OPTIONS)}")
    rows = int(request.options.get("max_rows", MAX_TRAIN_ROWS))
    if rows < 10:
        raise ConfigError(f"baseline max_rows must be at least 10 (got {rows})")
    return rows


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).astype(np.float64, copy=False)


def _subsample(data: Dataset, max_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_rows` training rows: seeded, and stratified where every class fits."""
    n, y = len(data.x_train), data.y_train.numpy()
    if n <= max_rows:
        return _flat(data.x_train.numpy()), y
    # Pick row indices first: flattening all of Fashion-MNIST to float64 would cost 300 MB.
    classes = len(np.unique(y)) if data.task == "classification" else 0
    stratify = y if classes and min(max_rows, n - max_rows) >= classes else None
    keep, _ = train_test_split(np.arange(n), train_size=max_rows, random_state=seed,
                               stratify=stratify)
    keep = np.sort(keep)
    return _flat(data.x_train.numpy()[keep]), y[keep]


def _logistic(data: Dataset, x: np.ndarray, y: np.ndarray, x_val: np.ndarray,
              y_val: np.ndarray) -> dict[str, Any]:
    """The C with the lowest validation log loss; a network trial is picked on the same split."""
    model = LogisticRegression(max_iter=MAX_ITER, warm_start=True)
    labels = list(range(data.num_classes))
    best: dict[str, Any] = {}
    for c in LOGISTIC_C:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # see MAX_ITER
            model.set_params(C=c).fit(x, y)
        # Columns for every class of the split, even one the subsample happened to miss.
        proba = np.full((len(x_val), data.num_classes), 1e-15)
        proba[:, model.classes_] = model.predict_proba(x_val)
        loss = float(log_loss(y_val, proba, labels=labels))
        if not best or loss < best["val_loss"]:
            accuracy = float(np.mean(proba.argmax(1) == y_val))
            best = {"objective": "val_accuracy", "best": accuracy, "val_accuracy": accuracy,
                    "val_loss": loss, "model": "logistic_regression", "train_rows": len(x), "C": c}
    return best


def _ridge(data: Dataset, x: np.ndarray, y: np.ndarray, x_val: np.ndarray,
           y_val: np.ndarray) -> dict[str, Any]:
    """The alpha with the lowest validation MSE, as for the logistic baseline's C."""
    best: dict[str, Any] = {}
    for alpha in RIDGE_ALPHA:
        predicted = Ridge(alpha=alpha).fit(x, y).predict(x_val)
        # Targets are standardised: the MSE is in those units (as the training loop's
        # val_loss), the RMSE goes back to label units through target_std.
        mse = float(np.mean((predicted - y_val) ** 2))
        if not best or mse < best["val_loss"]:
            rmse = math.sqrt(mse) * data.target_std
            best = {"objective": "val_rmse", "best": rmse, "val_rmse": rmse, "val_loss": mse,
                    "model": "ridge", "train_rows": len(x), "alpha": alpha}
    return best
