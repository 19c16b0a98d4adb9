"""Chance level: the objective of a model that knows nothing of the inputs, and the rule
that says a score is no better than it.

The baseline worker reports `chance` (the objective of answering the validation label
frequencies: the largest class prior for accuracy, which is the majority rate, the label
std for RMSE) and `chance_bound`, the best a model that knows nothing reaches by luck on a
validation split of this size, at 3 standard errors (`workers.baseline.CHANCE_SE`; for
accuracy chance + 3 sqrt(p (1 - p) / n), kept below 1 by `workers.baseline.luck_bound`:
on a 95/5 split a perfect score is never luck). A score is at chance level when it is no
better than that bound: at most the bound for an objective that is maximised, at least it
for one that is minimised (RMSE).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from optuna.trial import FrozenTrial

# Without a bound (a baseline stored before it was reported), a fixed margin.
FALLBACK_MARGIN = 0.02
# All but this share of the scored coarse trials at chance level (and the baseline too)
# stop the study: a trial's best of several epochs, over a dozen trials, passes 3 standard
# errors now and then (shuffled digits, mlp: best 0.147 of 15 trials, bound 0.151). A
# stray counts as luck only within `STRAY_REACH` times the bound's distance from chance
# (6 standard errors): one trial beyond it learned something, and nothing is stopped.
STRAY_SHARE = 0.1
STRAY_REACH = 2.0
LEARNING_FALL = 0.10  # see `learning`


def chance_bound(handed: Mapping[str, Any], direction: str) -> float:
    """The score a model must beat to count as better than chance level."""
    bound, chance = handed.get("chance_bound"), float(handed["chance"])
    if bound is not None:
        return float(bound)
    if direction == "maximize" and chance <= 1.0:  # a score in [0, 1]: the bound stays below 1
        return min(chance + FALLBACK_MARGIN, chance + (1.0 - chance) / 2)
    return chance + FALLBACK_MARGIN if direction == "maximize" else chance - FALLBACK_MARGIN


def known_bound(handed: Mapping[str, Any], direction: str) -> float | None:
    """`chance_bound` where the baseline measured a chance level; None where it did not
    (no baseline ran, or the objective has none)."""
    return chance_bound(handed, direction) if handed.get("chance") is not None else None


def at_chance(value: float | None, bound: float, direction: str) -> bool:
    """Whether `value` is no better than chance level's `bound`."""
    if value is None or not math.isfinite(value):
        return False
    return value <= bound if direction == "maximize" else value >= bound


def best_value(trial: FrozenTrial, direction: str) -> float | None:
    """The best value a trial reached at any epoch it reported."""
    values = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def chance_trials(trials: Iterable[FrozenTrial], bound: float, direction: str
                  ) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """(the trials that reported a value, those of them whose best stayed at chance level)."""
    scored = [t for t in trials if best_value(t, direction) is not None]
    return scored, [t for t in scored if at_chance(best_value(t, direction), bound, direction)]


def stuck_at_chance(scored: int, hopeless: int, lucky: int) -> bool:
    """Whether `scored` trials, of which `hopeless` stayed at chance level and `lucky` within
    the strays' reach of it (`hopeless` among them), say the labels carry no information:
    all within reach, and no more than `STRAY_SHARE` of them (rounded down) past the bound."""
    return scored > 0 and lucky == scored \
        and scored - hopeless <= math.floor(STRAY_SHARE * scored)


def stray_reach(chance: float, bound: float) -> float:
    """How far a stray may pass the bound and still count as luck."""
    return chance + STRAY_REACH * (bound - chance)


# the fewest steps a first epoch needs to be judged hopeless: the worker's own vital signs
# wait for as many (workers.vitals: twice its 10-step window) before they say anything
MIN_JUDGED_STEPS = 20


def learning(metrics: dict[str, float]) -> bool:
    """Whether a fresh run's first epoch shows it learning: its mean training loss at
    least `LEARNING_FALL` below its first batch's (`first_train_loss`, which the training
    loop reports with epoch 1). A run at chance level that learns is a slow starter (a high
    lr settling down), not hopeless. An epoch of fewer than MIN_JUDGED_STEPS steps (a tiny
    dataset) is too short to tell either way: the run is not called hopeless after it."""
    if metrics.get("epoch_steps", MIN_JUDGED_STEPS) < MIN_JUDGED_STEPS:
        return True
    first, mean = metrics.get("first_train_loss"), metrics.get("train_loss")
    if first is None or mean is None or not (math.isfinite(first) and first > 0):
        return True  # nothing to judge by: not called hopeless
    return mean <= (1 - LEARNING_FALL) * first
