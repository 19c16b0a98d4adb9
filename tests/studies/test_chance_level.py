"""Labels that do not match the inputs: the baseline and coarse stay at chance level, and
the study stops at coarse with a sentence that says what to check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits

from stagetune.studies.run.runner import Runner, StudyReport
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store
from stagetune.workers.data import RawData, register_dataset


@register_dataset("shuffled_digits")
def shuffled_digits(*, settings: Any) -> RawData:
    """digits with its labels permuted: no input says anything about its label."""
    x, y = load_digits(return_X_y=True)
    return RawData(x.reshape(-1, 1, 8, 8).astype(np.float32),
                   np.random.default_rng(0).permutation(y), "classification", is_image=True)


@register_dataset("shuffled_diabetes")
def shuffled_diabetes(*, settings: Any) -> RawData:
    """diabetes with its targets permuted."""
    x, y = load_diabetes(return_X_y=True)
    return RawData(x.astype(np.float32), np.random.default_rng(0).permutation(y), "regression")


def run(tmp_path: Path, dataset: str) -> StudyReport:
    spec = load_spec({
        "name": f"chance-{dataset}".replace("_", "-"),
        "task": {"dataset": dataset, "model": "mlp"},
        "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        "stages": {"init_check": {"enabled": False}, "overfit": {"enabled": False},
                   "lr_probe": {"enabled": False}, "coarse": {"trials": 4, "epochs": 2},
                   "refine": {"trials": 1, "epochs": 2}, "confirm": {"top": 1, "seeds": 1}},
        "seed": 0})
    return Runner(spec, Store(f"sqlite:///{tmp_path / 's.db'}")).run()


def stage(report: StudyReport, name: str) -> dict[str, Any]:
    return next(s for s in report.stages if s["name"] == name)


@pytest.mark.parametrize(("dataset", "objective"), [("shuffled_digits", "accuracy"),
                                                    ("shuffled_diabetes", "rmse")])
def test_shuffled_labels_stop_the_study_at_coarse(tmp_path: Path, dataset: str,
                                                  objective: str) -> None:
    report = run(tmp_path, dataset)
    assert report.status == "stopped"
    baseline, coarse = stage(report, "baseline"), stage(report, "coarse")
    assert baseline["verdict"] == "warned"
    assert "at chance level" in baseline["message"]
    assert "the inputs carry no linear information about the labels" in baseline["message"]
    assert coarse["verdict"] == "failed"
    assert stage(report, "refine")["verdict"] is None  # never run
    assert stage(report, "confirm")["verdict"] is None
    assert report.message.startswith(f"coarse: Validation {objective} stays at chance level "
                                     "(best ")
    assert "over 4 trials, baseline " in report.message
    assert report.message.endswith(
        "the labels carry no information about the inputs; check that labels and inputs are "
        "paired (shuffled or misaligned labels, a wrong label column, augmentation that "
        "destroys the signal).")


def test_healthy_digits_with_the_same_spec_is_not_stopped(tmp_path: Path) -> None:
    report = run(tmp_path, "digits")
    assert report.status == "completed", report.message
    assert stage(report, "baseline")["verdict"] == "passed"
    coarse = stage(report, "coarse")
    assert coarse["verdict"] in ("passed", "warned")
    assert "chance level" not in coarse["message"] or "0% stayed" in coarse["message"]


@pytest.mark.parametrize("dataset", ["digits", "diabetes"])
def test_the_chance_bound_is_three_standard_errors_on_the_validation_rows(dataset: str) -> None:
    from stagetune.workers import Task, TrialRequest
    from stagetune.workers.baseline import run_baseline
    from stagetune.workers.data import load_dataset

    final = run_baseline(TrialRequest(Task(dataset, "mlp"), mode="baseline")).final
    n, chance = load_dataset(dataset).val_size, final["chance"]
    if dataset == "digits":  # the largest class prior, and its binomial standard error
        assert chance == pytest.approx(0.103, abs=1e-3)
        assert final["chance_bound"] == pytest.approx(chance + 3 * (chance * (1 - chance) / n)
                                                      ** 0.5)
    else:  # the label std, less what a correlation of 3 / sqrt(n) explains
        assert chance == pytest.approx(71.6, abs=0.1)
        assert final["chance_bound"] == pytest.approx(chance * (1 - 9 / n) ** 0.5, rel=1e-4)
    assert abs(final["best"] - chance) > abs(final["chance_bound"] - chance)  # healthy


def test_continue_on_failure_goes_on_past_chance_level_with_what_coarse_found(
        tmp_path: Path) -> None:
    spec = load_spec({
        "name": "chance-go-on", "task": {"dataset": "shuffled_digits", "model": "mlp"},
        "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        "stages": {"continue_on_failure": True, "init_check": {"enabled": False},
                   "overfit": {"enabled": False}, "lr_probe": {"enabled": False},
                   "coarse": {"trials": 2, "epochs": 1}, "refine": {"trials": 1, "epochs": 1},
                   "confirm": {"enabled": False}}})
    report = Runner(spec, Store(f"sqlite:///{tmp_path / 'g.db'}")).run()
    assert stage(report, "coarse")["verdict"] == "failed"
    assert stage(report, "refine")["verdict"] is not None
    assert report.status == "completed" and report.best is not None


def test_a_few_lucky_strays_do_not_hide_chance_level_but_one_real_learner_does() -> None:
    from stagetune.studies.search.stages._chance import stray_reach, stuck_at_chance

    assert stuck_at_chance(15, 15, 15)
    assert stuck_at_chance(15, 14, 15)  # one in ten (rounded down) may pass the bound
    assert not stuck_at_chance(15, 13, 15)
    assert not stuck_at_chance(9, 8, 9)  # of fewer than ten, none
    assert not stuck_at_chance(15, 14, 14)  # a trial beyond the strays' reach learned
    assert not stuck_at_chance(0, 0, 0)
    assert stray_reach(0.10, 0.15) == pytest.approx(0.20)  # 6 standard errors of accuracy
    assert stray_reach(71.6, 67.9) == pytest.approx(64.2)  # RMSE: below chance is better
