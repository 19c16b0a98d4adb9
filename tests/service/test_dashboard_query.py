"""The trial table's sort and filter (studies.reporting.views.select_trials) on trials made with
Optuna's own create_trial: the orders, the filter's terms, and the errors that name
what is allowed."""

from __future__ import annotations

from typing import Any

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from stagetune.studies.reporting import views

CONDITIONAL = "lr[optimizer=sgd]"  # how the space names a parameter of one variant


def trial(number: int, stage: str, value: float | None, **params: Any) -> views.Numbered:
    dists = {"width": IntDistribution(8, 128), "act": CategoricalDistribution([1, "relu"]),
             CONDITIONAL: FloatDistribution(1e-4, 1e-1, log=True)}
    frozen = create_trial(state=TrialState.COMPLETE if value is not None else TrialState.PRUNED,
                          value=value, params=params,
                          distributions={k: dists[k] for k in params},
                          user_attrs={"status": "completed" if value is not None else "pruned",
                                      "message": "loss diverged" if value is None else "",
                                      "epochs": number % 3, "seconds": 10.0 - number})
    return number, stage, frozen


TRIALS = [trial(0, "coarse", 0.5, width=16, act="relu", **{CONDITIONAL: 0.01}),
          trial(1, "coarse", None, width=64, act=1),
          trial(2, "coarse", 0.7, width=32, act="relu", **{CONDITIONAL: 0.001}),
          trial(3, "refine", 0.7, width=8, act=1),
          trial(4, "refine", 0.6, width=128, act="relu"),
          trial(5, "confirm", 0.9, width=16, act="relu")]


def numbers(**query: Any) -> list[int]:
    return [n for n, _, _ in views.select_trials(TRIALS, **query)]


def test_the_default_is_number_order_and_the_old_filters_still_work() -> None:
    assert numbers() == [0, 1, 2, 3, 4, 5]
    assert numbers(stage="refine") == [3, 4]
    assert numbers(state="pruned") == [1]


def test_sorting_keeps_ties_in_number_order_and_missing_values_last_either_way() -> None:
    assert numbers(sort="value") == [0, 4, 2, 3, 5, 1]
    assert numbers(sort="value", order="desc") == [5, 2, 3, 4, 0, 1]  # 2 and 3 tie
    assert numbers(sort="duration") == [5, 4, 3, 2, 1, 0]
    assert numbers(sort="epochs", order="desc") == [2, 5, 1, 4, 0, 3]
    assert numbers(sort="stage", order="desc") == [5, 3, 4, 0, 1, 2]  # run order, reversed
    assert numbers(sort=f"param:{CONDITIONAL}") == [2, 0, 1, 3, 4, 5]
    assert numbers(sort="param:act") == [1, 3, 0, 2, 4, 5]  # numbers before text


@pytest.mark.parametrize(("q", "expected"), [
    ("width>=32", [1, 2, 4]),
    ("width>=32 act=relu", [2, 4]),
    ("act=RELU value<0.65", [0, 4]),  # values compare without case
    ("value!=0.7", [0, 1, 4, 5]),
    (f"{CONDITIONAL}<0.005", [2]),  # a name holding '=' is read whole
    ("relu", [0, 2, 4, 5]),  # a substring of a parameter's name=value
    ("diverged", [1]),  # ... or of the reason
    ("stage=refine state=complete", [3, 4]),
])
def test_the_filter_terms_must_all_match(q: str, expected: list[int]) -> None:
    assert numbers(q=q) == expected


@pytest.mark.parametrize(("query", "field", "says"), [
    ({"sort": "colour"}, "sort", "sort by one of: number, stage, state, value, duration, epochs, "
                                 "param:act, param:lr[optimizer=sgd], param:width"),
    ({"sort": "param:depth"}, "sort", "cannot sort by 'param:depth'"),
    ({"q": "depth>3"}, "q", "'depth' in the filter names nothing: compare number, stage"),
    ({"q": "width<wide"}, "q", "< compares numbers, and 'wide' is not one"),
])
def test_what_names_nothing_is_refused_with_what_is_allowed(query: dict[str, str], field: str,
                                                            says: str) -> None:
    with pytest.raises(views.TrialQueryError) as refused:
        views.select_trials(TRIALS, **query)
    assert refused.value.field == field and says in str(refused.value)
