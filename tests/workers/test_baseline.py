"""The linear baseline on real data: the score bands a linear model reaches, and the row cap."""

from __future__ import annotations

import math

import pytest

from stagetune.workers import ConfigError, Task, TrialRequest, execute
from stagetune.workers.baseline import MAX_TRAIN_ROWS, run_baseline
from stagetune.workers.data import load_dataset


def baseline(dataset: str, **options: object):
    return run_baseline(TrialRequest(Task(dataset, "mlp"), mode="baseline", options=options))


# Measured: digits 0.969, breast_cancer 0.982, wine 1.000 (validation accuracy).
@pytest.mark.parametrize(("dataset", "low", "high"), [
    ("digits", 0.93, 0.99), ("breast_cancer", 0.93, 1.0), ("wine", 0.9, 1.0),
])
def test_logistic_regression_lands_in_its_band(dataset: str, low: float, high: float) -> None:
    result = baseline(dataset)
    final = result.final
    assert result.status == "passed"
    assert final["objective"] == "val_accuracy" and final["model"] == "logistic_regression"
    assert low <= final["val_accuracy"] <= high
    assert final["best"] == final["val_accuracy"]
    assert 0 < final["val_loss"] < 0.5
    assert final["train_rows"] == len(load_dataset(dataset).x_train)
    assert result.message.startswith("A linear model (logistic regression on the flattened inputs) "
                                     f"reaches val_accuracy {final['val_accuracy']:.3f}")
    assert result.message.endswith("the score a network must beat.")


def test_ridge_rmse_is_in_label_units_on_diabetes() -> None:
    data = load_dataset("diabetes")
    assert 70 < data.target_std < 85  # the label's spread, in disease-progression units
    final = baseline("diabetes").final
    assert final["objective"] == "val_rmse" and final["model"] == "ridge"
    assert 50 < final["val_rmse"] < 62  # measured 57.6; predicting the mean gives ~ target_std
    assert final["val_rmse"] == pytest.approx(math.sqrt(final["val_loss"]) * data.target_std)
    assert final["best"] == final["val_rmse"]


def test_execute_dispatches_the_baseline_mode() -> None:
    result = execute(TrialRequest(Task("digits", "convnet"), mode="baseline"))
    assert result.status == "passed"
    assert result.final["objective"] == "val_accuracy"
    assert result.seconds > 0
    assert result.history == []


def test_training_rows_are_capped_with_a_seeded_subsample() -> None:
    assert MAX_TRAIN_ROWS == 10_000
    first = baseline("digits", max_rows=500)
    again = baseline("digits", max_rows=500)
    assert first.final["train_rows"] == 500
    assert "fitted on 500 of 1,437 training rows" in first.message
    assert first.final == again.final
    # Fewer rows, a weaker but still far-better-than-chance linear model.
    assert 0.85 < first.final["val_accuracy"] <= baseline("digits").final["val_accuracy"] + 0.01


def test_unknown_options_are_refused_with_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="no option 'rows'.*allowed: max_rows"):
        baseline("digits", rows=10)
    with pytest.raises(ConfigError, match="at least 10"):
        baseline("digits", max_rows=1)
