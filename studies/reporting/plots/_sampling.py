"""Downsampling on the server: what a figure of thousands of trials keeps.

Optuna's figures draw every trial they are given; a 10,000-trial study would send
hundreds of thousands of points to the browser. These helpers choose the trials that
keep the picture true (written here because neither Optuna nor Plotly downsamples).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

FIGURE_TRIALS = 500  # the most trials one figure draws
TOP_CURVES = 8  # learning curves overlaid: the best trials only


def sign(direction: str) -> int:
    """+1 when larger is better."""
    return 1 if direction == "maximize" else -1


def completed(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
            and math.isfinite(t.value)]


def best_first(trials: Sequence[FrozenTrial], direction: str) -> list[FrozenTrial]:
    return sorted(completed(trials), key=lambda t: -sign(direction) * t.value)  # type: ignore[operator]


def record_setters(trials: Sequence[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """The trials that set a new best, in order: keeping them keeps a best-so-far line exact."""
    out, best = [], -math.inf
    for t in completed(sorted(trials, key=lambda t: t.number)):
        if sign(direction) * t.value > best:  # type: ignore[operator]
            best = sign(direction) * t.value  # type: ignore[operator]
            out.append(t)
    return out


def sample_trials(trials: Sequence[FrozenTrial], direction: str, limit: int = FIGURE_TRIALS,
                  seed: int = 0) -> list[FrozenTrial]:
    """At most `limit` trials, in number order: every record setter, the best quarter of
    the budget, and a seeded uniform sample of the rest (pruned and failed trials keep
    their share, so the picture of what went wrong survives)."""
    if len(trials) <= limit:
        return list(trials)
    keep = {t.number: t for t in record_setters(trials, direction)}
    for t in best_first(trials, direction)[: limit // 4]:
        keep[t.number] = t
    rest = [t for t in trials if t.number not in keep]
    for t in random.Random(seed).sample(rest, max(0, min(len(rest), limit - len(keep)))):
        keep[t.number] = t
    return sorted(keep.values(), key=lambda t: t.number)


def as_study(trials: Sequence[FrozenTrial], direction: str) -> optuna.Study:
    """An in-memory Optuna study holding `trials`, for `optuna.visualization` to draw."""
    study = optuna.create_study(direction=direction)  # type: ignore[arg-type]
    study.add_trials([t for t in trials if t.state != TrialState.RUNNING
                      and t.state != TrialState.WAITING])
    return study


def thin(points: Sequence[float], limit: int = 400) -> list[int]:
    """Indices of at most `limit` evenly spaced points of a long series, ends included."""
    n = len(points)
    if n <= limit:
        return list(range(n))
    step = (n - 1) / (limit - 1)
    return sorted({round(i * step) for i in range(limit)})
