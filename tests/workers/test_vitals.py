"""Diagnosis-based pruning in the worker: a run whose vital signs say it is hopeless stops
within its first epoch, with the sign named; a healthy run is never stopped."""

from __future__ import annotations

import pytest

from stagetune.workers import Task, TrialRequest, execute

DIGITS_MLP = Task("digits", "mlp")


def watched(params: dict[str, object], epochs: int = 3, **request: object):
    return execute(TrialRequest(DIGITS_MLP, params=params, epochs=epochs, vitals=True,
                                **request))  # type: ignore[arg-type]


@pytest.mark.parametrize(("params", "sign"), [
    ({"lr": 1e-7}, "lr 1e-07 is likely too low for adamw"),
    ({"activation": "sigmoid", "depth": 10, "optimizer": "sgd", "lr": 0.01, "norm": "none"},
     "vanishing gradients: the first layer (stem.1)'s gradient is"),
    ({"depth": 6, "optimizer": "sgd", "lr": 5.0, "norm": "none"}, "dead units: 9"),
])
def test_a_hopeless_run_stops_in_its_first_epoch_naming_the_sign(params: dict[str, object],
                                                                   sign: str) -> None:
    result = watched(params)
    assert result.status == "hopeless", result.message
    assert result.epoch == 1 and 0 < result.partial < 1  # stopped before the epoch's end
    assert result.history == []
    assert result.message.startswith("hopeless: the training loss went from ")
    assert sign in result.message


def test_healthy_runs_and_unwatched_ones_are_never_stopped() -> None:
    assert watched({"lr": 3e-3}).status == "completed"
    assert watched({"lr": 0.05, "optimizer": "sgd"}).status == "completed"
    unwatched = execute(TrialRequest(DIGITS_MLP, params={"lr": 1e-7}, epochs=1))
    assert unwatched.status == "completed"


def test_no_check_under_one_cycle_whose_lr_starts_low_on_purpose() -> None:
    assert watched({"lr": 1e-7, "schedule": "one_cycle"}, epochs=1).status == "completed"


def test_a_continued_run_is_not_checked_again() -> None:
    saved: list[bytes] = []
    first = execute(TrialRequest(DIGITS_MLP, params={"lr": 1e-7}, epochs=1, horizon=2,
                                 checkpoint_at=(1,)),
                    None, lambda _epoch, blob: saved.append(blob))
    assert first.status == "completed" and saved
    resumed = watched({"lr": 1e-7}, epochs=2, resume=saved[0])
    assert resumed.status == "completed"
    assert [m["epoch"] for m in resumed.history] == [2]
