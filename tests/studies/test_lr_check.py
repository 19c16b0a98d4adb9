"""The check that the LR probe's range for an optimizer family held an lr that learns:
judged on coarse's trials at chance level, against the other families and the baseline."""

from __future__ import annotations

from typing import Any

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, create_trial

from stagetune.studies.search.lr_ranges import probed_space
from stagetune.studies.search.stages._lr_check import missed_ranges
from stagetune.studies.spec import load_spec

SPEC: dict[str, Any] = {
    "name": "lr-check", "task": {"dataset": "digits", "model": "mlp"},
    "space": {"optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
              "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True}},
}
RANGES = {"sgd": [0.3, 1.0], "adam": [1e-4, 1e-2]}
# ten classes: chance 0.1, bound 0.2
HANDED = {"lr_ranges": RANGES, "chance": 0.1, "chance_bound": 0.2, "baseline": 0.9}


def trial(optimizer: str, lr: float, value: float) -> FrozenTrial:
    name = "lr[optimizer=sgd]" if optimizer == "sgd" else "lr[optimizer=adamw]"
    return create_trial(value=value, intermediate_values={1: value},
                        params={"optimizer": optimizer, name: lr},
                        distributions={"optimizer": CategoricalDistribution(["sgd", "adamw"]),
                                       name: FloatDistribution(1e-5, 1.0, log=True)})


def missed(trials: list[FrozenTrial], spec: dict[str, Any] = SPEC,
           handed: dict[str, Any] = HANDED) -> list[str]:
    loaded = load_spec(spec)
    space = probed_space(loaded, handed.get("lr_ranges", {}))
    return [m.family for m in missed_ranges(loaded, handed, space, trials, "maximize")]


def test_a_family_that_never_learned_where_another_did_is_named() -> None:
    found = missed_ranges(load_spec(SPEC), HANDED, probed_space(load_spec(SPEC), RANGES),
                          [trial("sgd", 0.5, 0.11), trial("sgd", 0.8, 0.09),
                           trial("adamw", 1e-3, 0.93)], "maximize")
    assert [m.family for m in found] == ["sgd"]
    assert found[0].param == "lr[optimizer=sgd]" and (found[0].low, found[0].high) == (0.3, 1.0)
    words = found[0].sentence("val_accuracy")
    assert "none of the 2 sgd trials learned" in words and "adam reached 0.93" in words


@pytest.mark.parametrize(("trials", "handed", "why"), [
    ([trial("sgd", 0.5, 0.11), trial("sgd", 0.8, 0.35), trial("adamw", 1e-3, 0.93)], HANDED,
     "one sgd trial learned"),
    ([trial("sgd", 0.5, 0.11), trial("adamw", 1e-3, 0.93)], HANDED,
     "one sgd trial is too few to judge"),
    ([trial("sgd", 0.5, 0.11), trial("sgd", 0.8, 0.09), trial("adamw", 1e-3, 0.12),
      trial("adamw", 1e-2, 0.1)], {**HANDED, "baseline": 0.1},
     "nothing learned anywhere: the data's problem, judged at chance level"),
    ([trial("sgd", 0.5, 0.11), trial("sgd", 0.8, 0.09), trial("adamw", 1e-3, 0.93)],
     {k: v for k, v in HANDED.items() if k not in ("chance", "chance_bound")},
     "no chance level: a regression's error has none to judge by"),
    ([trial("sgd", 0.5, 0.11), trial("sgd", 0.8, 0.09), trial("adamw", 1e-3, 0.93)],
     {k: v for k, v in HANDED.items() if k != "lr_ranges"}, "no LR probe ran"),
])
def test_no_family_is_named_without_evidence(trials: list[FrozenTrial],
                                             handed: dict[str, Any], why: str) -> None:
    assert missed(trials, handed=handed) == [], why


def test_one_family_that_never_learned_where_the_baseline_did_is_named() -> None:
    spec = {**SPEC, "space": {"lr": SPEC["space"]["lr"]}, "fixed": {"optimizer": "sgd"}}
    handed = {**HANDED, "lr_ranges": {"sgd": [0.3, 1.0]}}
    trials = [create_trial(value=v, intermediate_values={1: v}, params={"lr": lr},
                           distributions={"lr": FloatDistribution(1e-5, 1.0, log=True)})
              for lr, v in ((0.4, 0.1), (0.9, 0.08), (0.6, 0.12))]
    assert missed(trials, spec, handed) == ["sgd"]
    assert missed(trials, spec, {**handed, "baseline": 0.12}) == []  # nor did the baseline
