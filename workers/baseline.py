"""Baseline: the score of a linear model on the flattened inputs, which a network must beat.

Logistic regression for classification, one logistic regression per label for
multi-label, ridge regression for regression (scikit-learn), fitted on the same
normalised train/validation split the training loop sees. Its validation outputs are
scored as a network's are (the task's loss and the metrics registry), so the numbers
compare directly with a trial's `val_loss` and `val_<metric>`s, the objective included.

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
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.multiclass import OneVsRestClassifier
from threadpoolctl import threadpool_limits

from stagetune.workers.data import AnyDataset, StreamingDataset, load_dataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.knobs import parse_task_params
from stagetune.workers.losses import LossFunction, loss_fn
from stagetune.workers.metrics import Scorer
from stagetune.workers.objective import Scoring, direction_of, scoring_for
from stagetune.workers.request import TrialRequest, TrialResult

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
# A streamed dataset's rows are read into memory: at most this much float64 per split
# (224 px RGB images: some 450 rows; a linear model on them is a weak but honest bar).
STREAM_BYTES = 512 * 2**20
# How many standard errors above chance a score must be to count as learning: on digits'
# 360 validation rows, accuracy 0.15 against chance 0.10; on diabetes' 89, RMSE 67.9
# against 71.6 (a linear model reaches 57.6). A shuffled-label network's best epoch stays
# inside.
CHANCE_SE = 3.0
IMBALANCED = 0.8  # majority share of validation from which the message names it (data_check's)


def run_baseline(request: TrialRequest) -> TrialResult:
    """Fit the linear baseline for `request.task.dataset`; the model and params are unused.

    Training rows are capped at `MAX_TRAIN_ROWS` (option `max_rows`), subsampled with
    `request.seed`, stratified by class for classification.
    """
    max_rows = _max_rows(request)
    task = request.task
    data = load_dataset(task.needs("dataset"), parse_task_params(task, request.params).dataset_options)
    x, y = _subsample(data, max_rows, request.seed)
    x_val, y_val = _validation(data)
    scoring = scoring_for(replace(task, trainer=None), data)  # what a network's run reports
    criterion = loss_fn(data, loss=scoring.loss)
    what, fit = FITS[data.task]
    # BLAS gets the thread budget the worker gave torch: OpenBLAS threads that outnumber
    # the free cores spin against each other (lbfgs on Fashion-MNIST: 27 s on one
    # thread, over 5 minutes on two of a busy 2-core machine).
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        out, chosen = fit(data, criterion, x, y, x_val, y_val)
    final = _scores(data, scoring, out, y_val) | chosen | {"train_rows": len(x)}
    metric, direction = _objective(request, scoring, final)
    final |= {"objective": metric, "best": final[metric]}
    final |= _chance(data, scoring, y_val, metric, direction)
    value = f"{final[metric]:.3f}" if direction == "maximize" else f"{final[metric]:.3g}"
    capped = len(x) < data.train_size
    rows = f" (fitted on {len(x):,} of {data.train_size:,} training rows)" if capped else ""
    if len(x_val) < data.val_size:  # a stream's sample
        rows += f" (scored on {len(x_val):,} of {data.val_size:,} validation rows)"
    message = (f"A linear model ({what} on the flattened inputs) reaches {metric} "
               f"{value}{rows}: the score a network must beat."
               + imbalance_note(data, y_val, out, metric))
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


def _validation(data: AnyDataset) -> tuple[np.ndarray, np.ndarray]:
    """The validation split whole; of a stream, its first items (a seeded random order)."""
    if isinstance(data, StreamingDataset):
        x, y = data.sample("val", _stream_rows(data, data.val_size))
        return _flat(x.numpy()), y.numpy()
    return _flat(data.x_val.numpy()), data.y_val.numpy()


def _stream_rows(data: StreamingDataset, rows: int) -> int:
    """`rows`, or fewer where their float64 copy would pass STREAM_BYTES."""
    return max(10, min(rows, STREAM_BYTES // (8 * math.prod(data.input_shape))))


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).astype(np.float64, copy=False)


def _subsample(data: AnyDataset, max_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_rows` training rows: seeded, and stratified where every class fits;
    from a stream, a seeded random sample of items (never the whole stream)."""
    if isinstance(data, StreamingDataset):
        x_s, y_s = data.sample("train", _stream_rows(data, max_rows),
                               torch.Generator().manual_seed(seed))
        return _flat(x_s.numpy()), y_s.numpy()
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


Fit = Callable[[AnyDataset, LossFunction, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
               tuple[torch.Tensor, dict[str, Any]]]
"""fit(data, loss, x, y, x_val, y_val) -> (validation outputs as a network gives them, the
model's name and chosen regularisation)."""


def _logistic(data: AnyDataset, criterion: LossFunction, x: np.ndarray, y: np.ndarray,
              x_val: np.ndarray, y_val: np.ndarray) -> tuple[torch.Tensor, dict[str, Any]]:
    """The C with the lowest validation loss; a network trial is picked on the same split."""
    model = LogisticRegression(max_iter=MAX_ITER, warm_start=True)
    best: tuple[float, torch.Tensor, dict[str, Any]] | None = None
    for c in LOGISTIC_C:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # see MAX_ITER
            model.set_params(C=c).fit(x, y)
        # Columns for every class of the split, even one the subsample happened to miss.
        proba = np.full((len(x_val), data.num_classes), 1e-15)
        proba[:, model.classes_] = model.predict_proba(x_val)
        out = torch.as_tensor(np.log(proba), dtype=torch.float32)  # logits: softmax gives proba
        best = _better(best, criterion, out, y_val, {"model": "logistic_regression", "C": c})
    assert best is not None  # LOGISTIC_C is not empty
    return best[1], best[2]


def _multilabel(data: AnyDataset, criterion: LossFunction, x: np.ndarray, y: np.ndarray,
                x_val: np.ndarray, y_val: np.ndarray) -> tuple[torch.Tensor, dict[str, Any]]:
    """One logistic regression per label, the C with the lowest validation loss."""
    best: tuple[float, torch.Tensor, dict[str, Any]] | None = None
    for c in LOGISTIC_C:
        model = OneVsRestClassifier(LogisticRegression(C=c, max_iter=MAX_ITER))
        with warnings.catch_warnings():
            # see MAX_ITER; a label constant in the subsample is predicted as that constant
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)
            model.fit(x, y.astype(int))
        proba = np.clip(model.predict_proba(x_val), 1e-7, 1 - 1e-7)
        out = torch.as_tensor(np.log(proba) - np.log1p(-proba), dtype=torch.float32)  # logits
        best = _better(best, criterion, out, y_val,
                       {"model": "one_vs_rest_logistic_regression", "C": c})
    assert best is not None
    return best[1], best[2]


def _ridge(data: AnyDataset, criterion: LossFunction, x: np.ndarray, y: np.ndarray,
           x_val: np.ndarray, y_val: np.ndarray) -> tuple[torch.Tensor, dict[str, Any]]:
    """The alpha with the lowest validation loss, as for the logistic baseline's C.
    Targets are standardised: outputs are in those units, as a network's."""
    best: tuple[float, torch.Tensor, dict[str, Any]] | None = None
    for alpha in RIDGE_ALPHA:
        predicted = Ridge(alpha=alpha).fit(x, y).predict(x_val)
        out = torch.as_tensor(predicted, dtype=torch.float32)[:, None]
        best = _better(best, criterion, out, y_val, {"model": "ridge", "alpha": alpha})
    assert best is not None
    return best[1], best[2]


FITS: dict[str, tuple[str, Fit]] = {
    "classification": ("logistic regression", _logistic),
    "multilabel": ("a logistic regression per label", _multilabel),
    "regression": ("ridge regression", _ridge),
}


def _better(best: tuple[float, torch.Tensor, dict[str, Any]] | None, criterion: LossFunction,
            out: torch.Tensor, y_val: np.ndarray, chosen: dict[str, Any]
            ) -> tuple[float, torch.Tensor, dict[str, Any]]:
    loss = float(criterion(out, torch.as_tensor(y_val)))
    return (loss, out, chosen) if best is None or loss < best[0] else best


def _scores(data: AnyDataset, scoring: Scoring, out: torch.Tensor,
            y_val: np.ndarray) -> dict[str, Any]:
    """val_loss and every val_<metric> a network's run on this task reports."""
    scorer = Scorer(data, loss_fn(data, loss=scoring.loss), scoring.metrics)
    scorer.update(out, torch.as_tensor(y_val))
    return scorer.compute()


def _objective(request: TrialRequest, scoring: Scoring, final: dict[str, Any]) -> tuple[str, str]:
    """The request's objective where the baseline reports it, else the task's default."""
    if request.objective in final:
        return request.objective, request.direction or direction_of(request.task,
                                                                    request.objective)
    return scoring.objective, scoring.direction


def _chance(data: AnyDataset, scoring: Scoring, y_val: np.ndarray, metric: str,
            direction: str) -> dict[str, float]:
    """`chance`: the objective of a model that knows nothing of the inputs (it answers the
    validation label frequencies: the largest class prior for accuracy, the label std for
    RMSE); `chance_bound`: the best such a model reaches by luck on this validation split,
    at `CHANCE_SE` standard errors. A score in [0, 1] that is maximised (accuracy, F1,
    AUROC) gets chance + 3 sqrt(p (1 - p) / n), kept below 1 (`luck_bound`). A regression
    objective gets the score of a null model correlated r = 3 / sqrt(n) with the labels, as
    luck allows: it explains r^2 = 9 / n of their variance (RMSE chance * sqrt(1 - 9 / n), R^2 9 / n). Other
    objectives (a classification loss) have no chance level here."""
    n = len(y_val)
    constant = _constant(data, y_val)
    chance = _scores(data, scoring, constant, y_val).get(metric)
    if chance is None or not math.isfinite(chance) or n <= CHANCE_SE ** 2:
        return {}
    if data.task == "regression":
        # predictions shrunk from the mean towards the labels by c: their MSE is
        # (1 - c)^2 var, the least a null model's MSE reaches at r^2 = 9 / n
        c = 1 - math.sqrt(1 - CHANCE_SE ** 2 / n)
        lucky = constant + c * (torch.as_tensor(y_val, dtype=torch.float32).reshape(constant.shape)
                                  - constant)
        bound = _scores(data, scoring, lucky, y_val)[metric]
    elif direction == "maximize" and 0.0 <= chance <= 1.0:
        bound = luck_bound(chance, n)
    else:
        return {}
    return {"chance": chance, "chance_bound": bound}


def luck_bound(chance: float, n: int, z: float = CHANCE_SE) -> float:
    """The most a score in [0, 1] with chance level `chance` reaches by luck on `n` rows:
    chance + z sqrt(p (1 - p) / n) (the Wald bound, which the shuffled-label calibration
    above used), or the upper end of the Wilson score interval where that is lower. Near 1
    the Wald bound passes 1 (a 95/5 split of 35 rows: 1.06, so a perfect score was "at
    chance"); Wilson's never reaches it. At a small chance level (ten balanced classes: 0.1)
    Wald's is the lower, and at 0.5 the two differ by a tenth of their margin."""
    wald = chance + z * math.sqrt(chance * (1 - chance) / n)
    k = z * z / n
    wilson = (chance + k / 2 + z * math.sqrt(chance * (1 - chance) / n + k / (4 * n))) / (1 + k)
    return min(wald, wilson)


def imbalance_note(data: AnyDataset, y_val: np.ndarray, out: torch.Tensor, metric: str) -> str:
    """Where the majority class holds `IMBALANCED` of validation and accuracy is judged: the
    majority rate and the baseline's macro F1, which weighs the classes alike."""
    if data.task != "classification" or metric != "val_accuracy" or not len(y_val):
        return ""
    shares = np.bincount(y_val, minlength=data.num_classes) / len(y_val)
    if shares.max() < IMBALANCED:
        return ""
    f1 = f1_score(y_val, out.argmax(1).numpy(), average="macro",
                  labels=np.flatnonzero(shares), zero_division=0)
    return (f" Class {int(shares.argmax())} holds {shares.max():.0%} of validation, so answering it "
            f"always scores accuracy {shares.max():.2f}; the baseline's macro F1, which weighs "
            f"classes alike, is {f1:.2f}.")


def _constant(data: AnyDataset, y_val: np.ndarray) -> torch.Tensor:
    """The outputs of a model answering the validation label frequencies for every sample
    (for regression, the validation mean: in standardised units, as a network's)."""
    if data.task == "classification":
        freq = np.bincount(y_val, minlength=data.num_classes) / len(y_val)
        logits = np.log(np.clip(freq, 1e-15, None))
    elif data.task == "multilabel":
        freq = np.clip(y_val.mean(0), 1e-7, 1 - 1e-7)
        logits = np.log(freq) - np.log1p(-freq)
    else:
        logits = np.atleast_1d(y_val.mean(0))
    return torch.as_tensor(np.tile(logits, (len(y_val), 1)), dtype=torch.float32)
