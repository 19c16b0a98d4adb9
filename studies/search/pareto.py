"""Several objectives (`task.objectives`): each trial's point, the front, and the sampler.

Optuna neither takes per-epoch values nor prunes in a multi-objective study, and stagetune's
trials report every epoch (for pruning, diagnosis and a continued run). So a stage's Optuna
study stays single-objective on the first objective, and each trial records its point, every
objective's value, in its `objectives` attribute (`point_of`). The sampler is Optuna's
multi-objective TPE, asked on an in-memory study of those points (`ParetoSampler`); the
front is Optuna's too (`Study.best_trials`).

A point is read at the epoch where the trial's first objective was best, among the epochs it
ran itself: the model it stands for. `params` is its model's parameter count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from stagetune.studies.spec import known_direction
from stagetune.studies.spec.space import knobs

POINT = "objectives"  # the user attribute holding a trial's point
K = TypeVar("K")
Objectives = Sequence[tuple[str, str]]  # (name, direction), the first objective first


def point_of(objectives: Objectives, history: Sequence[Mapping[str, Any]], parameters: int
             ) -> dict[str, float] | None:
    """The trial's values of every objective at its best epoch (None: none is finite)."""
    first, direction = objectives[0]
    rows = [m for m in history if math.isfinite(float(m.get(first, math.nan)))]
    if not rows:
        return None
    sign = 1 if direction == "maximize" else -1
    best = max(rows, key=lambda m: sign * float(m[first]))
    point = {}
    for name, _ in objectives:
        value = float(parameters) if name == "params" else float(best.get(name, math.nan))
        if not math.isfinite(value):
            return None
        point[name] = value
    return point


def declared_objectives(task: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """A stored spec's objectives with their directions where each is known without a
    trial worker (the first's may be the spec's `direction`); None where one is not."""
    names = task.get("objectives") or []
    directions = [task.get("direction") or known_direction(names[0]),
                  *map(known_direction, names[1:])] if names else []
    if not names or None in directions:
        return None
    return list(zip(names, directions, strict=True))  # type: ignore[arg-type]


def front(points: Mapping[K, Sequence[float]], directions: Sequence[str]) -> list[K]:
    """The keys whose points no other point beats on every objective (Optuna's front),
    best first by the first objective."""
    if not points:
        return []
    keys = list(points)
    study = in_memory(directions)
    study.add_trials([create_trial(values=list(points[k]), user_attrs={"key": i})
                      for i, k in enumerate(keys)])
    on = [keys[t.user_attrs["key"]] for t in study.best_trials]
    sign = 1 if directions[0] == "maximize" else -1
    return sorted(on, key=lambda k: -sign * points[k][0])


def spread(items: Sequence[K], n: int) -> list[K]:
    """`n` of `items` (a front, best first) evenly spaced along it, the first included."""
    if n >= len(items):
        return list(items)
    if n <= 1:
        return list(items[:n])
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def as_points(trials: Sequence[FrozenTrial], objectives: Objectives) -> list[FrozenTrial]:
    """A stage's own completed trials with a point (not those told from elsewhere), as
    trials of a study of the objectives (`in_memory`)."""
    names = [name for name, _ in objectives]
    return [create_trial(values=[t.user_attrs[POINT][n] for n in names], params=t.params,
                         distributions=t.distributions)
            for t in trials if t.state == TrialState.COMPLETE and POINT in t.user_attrs
            and "from" not in t.user_attrs]


def front_entries(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """Trials on a front as the API and the stage's figures list them."""
    return [{"trial": t.number, "params": knobs(t.params), "values": t.user_attrs[POINT]}
            for t in trials]


def trial_front(trials: Sequence[FrozenTrial], objectives: Objectives) -> list[FrozenTrial]:
    """The completed trials with a point that are on the front of those."""
    scored = {t.number: t for t in trials
              if t.state == TrialState.COMPLETE and POINT in t.user_attrs}
    points = {n: [t.user_attrs[POINT][name] for name, _ in objectives]
              for n, t in scored.items()}
    return [scored[n] for n in front(points, [d for _, d in objectives])]


def front_sentence(objectives: Objectives, on: int, of: int) -> str:
    """How many configurations are on the front, in words."""
    names = [name for name, _ in objectives]
    return (f"{on} of {of} configurations are on the front of {', '.join(names[:-1])} against "
            f"{names[-1]}: none of the others beats one of them on every objective.")


class ParetoSampler(optuna.samplers.BaseSampler):
    """Optuna's multi-objective TPE on the stage's own completed trials as points: each
    trial asked here is drawn by a trial of an in-memory study that holds them (seeded by
    the trial's number, so that two proposals never repeat one random draw)."""

    def __init__(self, objectives: Objectives, seed: int) -> None:
        self.objectives, self.seed = list(objectives), seed
        self._drawing: tuple[int, optuna.Trial] | None = None

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return _suggest(self._draw(study, trial.number), param_name, param_distribution)

    def _draw(self, study: optuna.Study, number: int) -> optuna.Trial:
        if self._drawing is None or self._drawing[0] != number:
            sampler = optuna.samplers.TPESampler(seed=self.seed + number, multivariate=True,
                                                 group=True, n_startup_trials=5)
            shadow = in_memory([d for _, d in self.objectives], sampler)
            shadow.add_trials(self._observed(study))
            self._drawing = (number, shadow.ask())
        return self._drawing[1]

    def _observed(self, study: optuna.Study) -> list[FrozenTrial]:
        return as_points(study.get_trials(deepcopy=False), self.objectives)


def _suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high,
                                   log=distribution.log, step=distribution.step)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high,
                                 log=distribution.log, step=distribution.step)
    return trial.suggest_categorical(name, distribution.choices)  # type: ignore[attr-defined]


def in_memory(directions: Sequence[str],
              sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """A study of several objectives in memory, made without Optuna's log line."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line each time
    try:
        return optuna.create_study(directions=list(directions), sampler=sampler)  # type: ignore[arg-type]
    finally:
        optuna.logging.set_verbosity(verbosity)
