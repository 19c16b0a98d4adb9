"""Spec to Optuna distributions, and narrowing the space after a coarse search."""

from __future__ import annotations

import math
import random

import optuna
import pytest

from stagetune.studies.spec import CategoricalParam, FloatParam, IntParam, load_spec
from stagetune.studies.spec.space import narrow, to_distributions

SPACE = load_spec({
    "name": "s", "task": {"dataset": "digits", "model": "convnet"},
    "space": {
        "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "width": {"type": "int", "low": 16, "high": 128, "log": True},
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "adamw"]},
    },
}).space


def trials(score, n: int = 60, seed: int = 0) -> list[optuna.trial.FrozenTrial]:
    rng, dists = random.Random(seed), to_distributions(SPACE)
    out = []
    for _ in range(n):
        params = {"lr": math.exp(rng.uniform(math.log(1e-5), 0.0)), "dropout": rng.uniform(0, 0.5),
                  "width": rng.randint(16, 128), "optimizer": rng.choice(["sgd", "adam", "adamw"])}
        out.append(optuna.trial.create_trial(params=params, distributions=dists, value=score(params)))
    return out


def test_distributions_follow_the_spec() -> None:
    dists = to_distributions(SPACE)
    assert dists["lr"] == optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)
    assert dists["width"] == optuna.distributions.IntDistribution(16, 128, log=True)
    assert dists["optimizer"] == optuna.distributions.CategoricalDistribution(["sgd", "adam", "adamw"])


def best(all_trials: list[optuna.trial.FrozenTrial], share: float = 0.25,
         direction: str = "maximize") -> list[optuna.trial.FrozenTrial]:
    ranked = sorted(all_trials, key=lambda t: t.value, reverse=direction == "maximize")
    return ranked[: max(2, int(share * len(ranked)))]


def test_narrowing_keeps_the_best_region_on_the_log_scale() -> None:
    # best near lr = 1e-3 and low dropout; adamw wins
    result = narrow(SPACE, best(trials(lambda p: -abs(math.log10(p["lr"]) + 3)
                                       - 8 * abs(p["dropout"] - 0.25)
                                       + (4 if p["optimizer"] == "adamw" else 0), n=200), 0.1))
    lr = result.region["lr"]
    assert isinstance(lr, FloatParam) and lr.log
    assert 1e-5 < lr.low < 1e-3 < lr.high < 1.0
    assert math.log(lr.high / lr.low) < 0.75 * math.log(1.0 / 1e-5)  # clearly narrower
    dropout = result.region["dropout"]
    assert 0.0 < dropout.low < 0.25 < dropout.high < 0.5
    assert result.region["optimizer"] == CategoricalParam(type="categorical", choices=["adamw"])
    assert result.boundary == {}


def test_an_edge_is_flagged_but_never_widened_past_the_declared_range_by_default() -> None:
    # bigger is always better for width; the optimum lies past the declared high of 128
    result = narrow(SPACE, best(trials(lambda p: p["width"] + random.random())))
    assert result.boundary == {"width": "high"}
    width = result.region["width"]
    assert isinstance(width, IntParam) and width.high == 128
    assert result.describe() == ["width's good values sit at the high edge of its declared range; not "
                                 "widened past the declared range (stages.coarse.widen: true "
                                 "allows it)"]


def test_with_widen_an_edge_parameter_is_widened_past_it() -> None:
    result = narrow(SPACE, best(trials(lambda p: p["width"] + random.random())), widen=True)
    width = result.region["width"]
    assert isinstance(width, IntParam) and width.high > 128
    assert "widened past it" in result.describe()[0]


def test_widening_stops_at_the_knobs_own_limits() -> None:
    # smaller is better for dropout, but dropout cannot go below 0
    result = narrow(SPACE, best(trials(lambda p: -p["dropout"])), widen=True)
    assert result.boundary["dropout"] == "low"
    assert result.region["dropout"].low == 0.0


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_direction_decides_which_trials_are_best(direction: str) -> None:
    result = narrow(SPACE, best(trials(lambda p: math.log10(p["lr"])), direction=direction))
    side = "low" if direction == "minimize" else "high"
    assert result.boundary.get("lr") == side


def test_an_edge_of_a_range_the_study_narrowed_itself_moves_towards_the_declared_one() -> None:
    # the space holds lr in [1e-5, 1] as the LR probe left it; the user declared [1e-6, 10]
    result = narrow(SPACE, best(trials(lambda p: math.log10(p["lr"]))),
                    declared={"lr": (1e-6, 10.0)})
    assert result.boundary == {} and result.moved == {"lr": "high"}  # no warning: no one to ask
    lr = result.region["lr"]
    assert isinstance(lr, FloatParam) and 1.0 < lr.high <= 10.0
    assert "edge of the LR probe's range" in result.describe_moved()[0]
    # at the declared bound itself, it stays the user's edge
    at_bound = narrow(SPACE, best(trials(lambda p: math.log10(p["lr"]))),
                      declared={"lr": (1e-6, 1.0)})
    assert at_bound.boundary == {"lr": "high"} and at_bound.moved == {}
