"""The pieces of a search of several objectives: a trial's point, the front, the spread
along it, and the sampler that draws from the points (studies.search.pareto)."""

from __future__ import annotations

import math

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from stagetune.studies.search.pareto import POINT, ParetoSampler, front, point_of, spread

ACCURACY_AND_SIZE = (("val_accuracy", "maximize"), ("params", "minimize"))


def test_the_front_is_what_no_other_point_beats_best_first() -> None:
    points = {"big": [0.98, 9000.0], "mid": [0.95, 2000.0], "small": [0.90, 500.0],
              "worse": [0.94, 2500.0], "tie": [0.95, 2000.0]}
    on = front(points, ["maximize", "minimize"])
    assert set(on) == {"big", "mid", "small", "tie"}  # 'worse' is beaten by 'mid'
    assert on[0] == "big" and on[-1] == "small"
    assert front({}, ["maximize", "minimize"]) == []
    # directions matter: minimising both, the small one beats the others
    assert front(points, ["minimize", "minimize"]) == ["small"]


def test_spread_takes_both_ends_and_evenly_between() -> None:
    assert spread(list("abcdefg"), 3) == ["a", "d", "g"]
    assert spread(list("abc"), 5) == ["a", "b", "c"]
    assert spread(list("abc"), 1) == ["a"]


def test_a_point_is_read_at_the_best_epoch_of_the_first_objective() -> None:
    history = [{"val_accuracy": 0.80, "val_loss": 0.9, "epoch_seconds": 1.0},
               {"val_accuracy": 0.91, "val_loss": 0.5, "epoch_seconds": 1.2},
               {"val_accuracy": 0.89, "val_loss": 0.4, "epoch_seconds": 1.1},
               {"val_accuracy": math.nan, "val_loss": math.nan, "epoch_seconds": 1.0}]
    objectives = (("val_accuracy", "maximize"), ("params", "minimize"),
                  ("epoch_seconds", "minimize"))
    assert point_of(objectives, history, 1234) == {"val_accuracy": 0.91, "params": 1234.0,
                                                   "epoch_seconds": 1.2}
    assert point_of(objectives, history[3:], 1234) is None  # no finite epoch: no point
    assert point_of((("val_loss", "minimize"), ("params", "minimize")), history, 7) == {
        "val_loss": 0.4, "params": 7.0}


def test_the_sampler_draws_inside_the_space_from_the_points_told() -> None:
    space = {"lr": FloatDistribution(1e-4, 1.0, log=True), "width": IntDistribution(4, 128),
             "act": CategoricalDistribution(["relu", "tanh"])}
    study = optuna.create_study(direction="maximize",
                                sampler=ParetoSampler(ACCURACY_AND_SIZE, seed=0))
    drawn = []
    for _ in range(12):
        trial = study.ask(space)
        params = trial.params
        assert space["lr"].low <= params["lr"] <= space["lr"].high
        assert 4 <= params["width"] <= 128 and params["act"] in ("relu", "tanh")
        # a made-up task: accuracy rises with width, and so does size
        accuracy = 1 - 1 / params["width"]
        trial.set_user_attr(POINT, {"val_accuracy": accuracy, "params": params["width"] * 100.0})
        study.tell(trial, accuracy)
        drawn.append(params)
    assert len({p["width"] for p in drawn}) > 6  # no draw repeats another's random one
    # a trial told from elsewhere (coarse's), or one without a point, is not on this front
    told = study.ask(space)
    told.set_user_attr("from", "coarse")
    told.set_user_attr(POINT, {"val_accuracy": 0.99, "params": 1.0})
    study.tell(told, 0.99)
    study.tell(study.ask(space), 0.5)
    assert len(ParetoSampler(ACCURACY_AND_SIZE, 0)._observed(study)) == 12
