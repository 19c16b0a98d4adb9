"""Curve diagnosis: hand-made curves for each kind, then real runs of the training loop."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from stagetune.studies.reporting.diagnosis import KINDS, MIN_EPOCHS, Diagnosis, diagnose
from stagetune.workers import Task, TrialRequest, execute


def curves(train_loss: Sequence[float], val_loss: Sequence[float],
           val_accuracy: Sequence[float]) -> list[dict[str, float]]:
    """A history as the training loop writes it, one dict per epoch."""
    return [{"epoch": i + 1, "train_loss": t, "val_loss": v, "val_accuracy": a, "lr": 1e-3,
             "grad_norm": 1.0, "train_accuracy": a}
            for i, (t, v, a) in enumerate(zip(train_loss, val_loss, val_accuracy, strict=True))]


def classify(history: list[dict[str, float]], baseline: float | None = None) -> Diagnosis:
    return diagnose(history, "val_accuracy", "maximize", baseline)


# A healthy run: fast fall, then flat; used as the template the cases below bend.
TRAIN = [1.4, 0.45, 0.17, 0.09, 0.05, 0.035, 0.028, 0.022, 0.017, 0.015, 0.014, 0.013]
VAL = [0.98, 0.30, 0.16, 0.10, 0.075, 0.06, 0.055, 0.052, 0.050, 0.050, 0.049, 0.049]
ACC = [0.91, 0.95, 0.97, 0.98, 0.985, 0.988, 0.988, 0.99, 0.99, 0.99, 0.99, 0.99]


# Hand-made curves, one per kind.

def test_a_flat_healthy_run_is_saturated() -> None:
    d = classify(curves(TRAIN, VAL, ACC), baseline=0.969)
    assert d.kind == "saturated"
    assert "best 0.99 in epoch 8" in d.message  # three figures at most, no padding
    assert "converged" in d.fix
    assert d.figures["best"] == 0.99


def test_a_rising_tail_is_still_improving() -> None:
    acc = [0.5, 0.6, 0.68, 0.74, 0.79, 0.83, 0.86, 0.88, 0.90, 0.92, 0.935, 0.95]
    val = [2.0, 1.6, 1.3, 1.1, 0.9, 0.75, 0.62, 0.52, 0.44, 0.37, 0.31, 0.26]
    train = [2.1, 1.7, 1.35, 1.1, 0.9, 0.72, 0.58, 0.47, 0.38, 0.31, 0.25, 0.2]
    d = classify(curves(train, val, acc), baseline=0.9)
    assert d.kind == "still_improving"
    assert "0.9 before the last 3 epochs, 0.95 in epoch 12" in d.message
    assert d.fix == "Train longer (the curve was still improving at epoch 12)."


def test_a_falling_validation_loss_at_flat_accuracy_is_still_improving() -> None:
    val = [0.98, 0.30, 0.16, 0.10, 0.075, 0.06, 0.055, 0.052, 0.050, 0.045, 0.040, 0.035]
    d = classify(curves(TRAIN, val, ACC))
    assert d.kind == "still_improving"
    assert "validation loss fell 30%" in d.message


def test_a_rising_validation_loss_with_a_falling_train_loss_is_overfitting() -> None:
    train = [1.2, 0.5, 0.3, 0.2, 0.12, 0.07, 0.04, 0.02, 0.01, 0.006, 0.004, 0.002]
    val = [1.1, 0.6, 0.45, 0.40, 0.42, 0.46, 0.50, 0.55, 0.60, 0.64, 0.68, 0.71]
    acc = [0.7, 0.85, 0.88, 0.9, 0.9, 0.9, 0.89, 0.9, 0.89, 0.89, 0.88, 0.89]
    d = classify(curves(train, val, acc), baseline=0.8)
    assert d.kind == "overfitting"
    assert "bottomed at 0.4 in epoch 4" in d.message and "+69%" in d.message
    assert "early stopping around epoch 4" in d.fix
    assert d.figures["gap_end"] > d.figures["gap_at_best"]


def test_one_noisy_epoch_of_validation_loss_is_not_overfitting() -> None:
    val = [*VAL[:-3], 0.065, 0.049, 0.048]  # a bump inside the last quarter, then back down
    assert classify(curves(TRAIN, val, ACC)).kind == "saturated"


def test_not_beating_the_linear_baseline_is_underfitting() -> None:
    d = classify(curves(TRAIN, VAL, [a - 0.03 for a in ACC]), baseline=0.969)
    assert d.kind == "underfitting"
    assert "best val_accuracy 0.96 is not clearly better than the linear baseline's 0.969" in d.message
    # the training loss fell to near zero: no step size is the matter, the advice says none
    assert d.fix.startswith("More capacity (width/depth)") and "learning rate" not in d.fix
    assert "close to linear" in d.fix


def test_a_training_loss_that_stays_high_is_underfitting_without_a_baseline() -> None:
    train = [2.3, 2.2, 2.1, 2.05, 2.0, 1.98, 1.96, 1.95, 1.94, 1.93, 1.93, 1.92]
    val = [2.3, 2.2, 2.12, 2.06, 2.02, 2.0, 1.98, 1.97, 1.96, 1.95, 1.95, 1.95]
    acc = [0.2, 0.25, 0.28, 0.3, 0.31, 0.32, 0.32, 0.33, 0.33, 0.33, 0.33, 0.33]
    d = classify(curves(train, val, acc))
    assert d.kind == "underfitting"
    assert "training loss only fell from 2.3 to 1.92 (83% of where it started)" in d.message
    assert "stopped moving" in d.fix  # flat over the second half


def test_a_nan_is_unstable_even_in_a_short_run() -> None:
    d = classify(curves([2.3, math.nan], [2.2, 2.4], [0.2, 0.1]))
    assert d.kind == "unstable"
    assert "training loss became nan in epoch 2" in d.message
    assert "Lower the learning rate" in d.fix and "warmup" in d.fix and "clipping" in d.fix


def test_a_nan_stored_as_none_is_unstable() -> None:
    history = curves(TRAIN, VAL, ACC)
    history[4]["val_loss"] = None  # type: ignore[assignment]  # JSON has no NaN
    d = classify(history)
    assert d.kind == "unstable" and "validation loss became nan in epoch 5" in d.message


def test_a_training_loss_spike_is_unstable() -> None:
    train = [*TRAIN[:5], 0.4, *TRAIN[6:]]
    d = classify(curves(train, VAL, ACC))
    assert d.kind == "unstable"
    assert "jumped from 0.05 to 0.4 in epoch 6" in d.message


def test_an_oscillating_objective_is_unstable() -> None:
    acc = [0.5, 0.8, 0.6, 0.85, 0.55, 0.88, 0.6, 0.9, 0.7, 0.9, 0.65, 0.9]
    d = classify(curves(TRAIN, VAL, acc))
    assert d.kind == "unstable"
    assert "swung up and down 10 times" in d.message
    assert "worst: 0.85 to 0.55 in epoch 5" in d.message


def test_small_wobbles_near_the_top_are_not_unstable() -> None:
    acc = [0.91, 0.95, 0.97, 0.98, 0.975, 0.985, 0.98, 0.99, 0.985, 0.99, 0.985, 0.99]
    assert classify(curves(TRAIN, VAL, acc)).kind == "saturated"


def test_rules_apply_in_order_of_precedence() -> None:
    # Overfitting and a spike at once: unstable wins.
    train = [1.2, 0.5, 0.3, 0.2, 0.12, 0.5, 0.04, 0.02, 0.01, 0.006, 0.004, 0.002]
    val = [1.1, 0.6, 0.45, 0.40, 0.42, 0.46, 0.50, 0.55, 0.60, 0.64, 0.68, 0.71]
    assert classify(curves(train, val, ACC)).kind == "unstable"
    # Overfitting below the baseline: overfitting wins (its fix comes first).
    assert classify(curves(TRAIN[:5] + [t / 10 for t in TRAIN[5:]], val, ACC), 0.995).kind == "overfitting"
    assert KINDS == ("unstable", "overfitting", "underfitting", "still_improving", "saturated")


def test_minimized_objectives_read_the_other_way() -> None:
    def regression(rmse: Sequence[float]) -> list[dict[str, float]]:
        return [{"epoch": i + 1, "train_loss": (r / 77) ** 2 * 0.9, "val_loss": (r / 77) ** 2,
                 "val_rmse": r} for i, r in enumerate(rmse)]

    rmse = [75, 65, 60, 57, 55, 54, 53.5, 53.2, 53.1, 53.0, 53.0, 53.0]
    assert diagnose(regression(rmse), "val_rmse", "minimize", 57.6).kind == "saturated"
    worse = diagnose(regression(rmse), "val_rmse", "minimize", 54.0)
    assert worse.kind == "underfitting"
    assert "best val_rmse 53 is not clearly better than the linear baseline's 54" in worse.message
    falling = diagnose(regression([75, 70, 66, 63, 60, 58, 56, 54, 52, 50, 48, 46]), "val_rmse",
                       "minimize", 57.6)
    assert falling.kind == "still_improving" and "still falling" in falling.message


@pytest.mark.parametrize("epochs", [0, 1, MIN_EPOCHS - 1])
def test_too_short_a_history_says_so_without_crashing(epochs: int) -> None:
    d = classify(curves(TRAIN[:epochs], VAL[:epochs], ACC[:epochs]), baseline=0.969)
    assert d.kind == "still_improving"
    assert "too little to judge" in d.message
    assert f"at least {MIN_EPOCHS} epochs" in d.fix


def test_bad_input_is_refused_with_what_is_needed() -> None:
    with pytest.raises(ValueError, match="direction must be 'maximize' or 'minimize'"):
        diagnose([], "val_accuracy", "max", None)
    with pytest.raises(ValueError, match="history lacks val_rmse"):
        diagnose(curves(TRAIN, VAL, ACC), "val_rmse", "minimize", None)


# Real curves from the training loop (seeded, so each run is the same every time).

def train(task: Task, params: dict, epochs: int, seed: int = 0) -> list[dict[str, float]]:
    result = execute(TrialRequest(task, params=params, epochs=epochs, seed=seed))
    assert result.status == "completed", result.message
    return result.history


@pytest.fixture(scope="module")
def digits_baseline() -> float:
    result = execute(TrialRequest(Task("digits", "convnet"), mode="baseline"))
    return float(result.final["best"])


@pytest.mark.slow
def test_real_default_convnet_on_digits_has_converged(digits_baseline: float) -> None:
    d = classify(train(Task("digits", "convnet"), {}, 15), digits_baseline)
    assert d.kind in ("saturated", "still_improving"), d.message
    assert d.figures["best"] > digits_baseline


@pytest.mark.slow
def test_real_short_run_is_still_improving(digits_baseline: float) -> None:
    d = classify(train(Task("digits", "convnet"), {}, 4), digits_baseline)
    assert d.kind == "still_improving", d.message


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_real_huge_sgd_learning_rate_without_norm_is_unstable(seed: int,
                                                              digits_baseline: float) -> None:
    params = {"optimizer": "sgd", "lr": 0.2, "norm": "none", "schedule": "constant",
              "batch_size": 32}
    d = classify(train(Task("digits", "convnet"), params, 10, seed), digits_baseline)
    assert d.kind == "unstable", d.message
    assert "Lower the learning rate" in d.fix


@pytest.mark.slow
def test_real_width_one_mlp_underfits_against_the_linear_baseline(digits_baseline: float) -> None:
    d = classify(train(Task("digits", "mlp"), {"width": 1, "depth": 1}, 10), digits_baseline)
    assert d.kind == "underfitting", d.message
    assert "linear baseline" in d.message and "More capacity" in d.fix
    assert d.figures["best"] < 0.5 < d.figures["baseline"]


@pytest.mark.slow
def test_real_wide_unregularised_mlp_overfits_diabetes() -> None:
    task = Task("diabetes", "mlp")
    baseline = execute(TrialRequest(task, mode="baseline")).final["best"]
    params = {"width": 256, "depth": 2, "norm": "none", "weight_decay": 0.0,
              "schedule": "constant"}
    d = diagnose(train(task, params, 60), "val_rmse", "minimize", baseline)
    assert d.kind == "overfitting", d.message
    assert d.figures["best_val_loss_epoch"] < 10 and "early stopping around epoch" in d.fix
