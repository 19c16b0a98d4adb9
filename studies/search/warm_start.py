"""A study warm-started from an earlier one of the store (`warm_start_from: <study>`).

What carries over: the LR probe's ranges (this study's probe is skipped when they cover
every optimizer family of its space), and every trial the earlier study ran, told to this
study's refine as prior observations, as coarse's trials are (each within this study's
declared space; those outside it are left out); refine's first proposal is the earlier
study's best full trial, so a full-length result in its region comes first. Coarse still runs: its
survivors are what refine continues, and its rungs what the pruner compares against.

Off unless declared: a study's result then never depends on what else is in its store.
The earlier study must be finished and tune the same dataset, model and objective.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from stagetune.studies.errors import StudyNotFoundError
from stagetune.studies.search.loop import told_trial
from stagetune.studies.spec import StudySpec
from stagetune.studies.spec.space import dims, distribution
from stagetune.studies.store import Store, StudyRecord
from stagetune.workers import StagetuneError

TOLD = "warm_start"  # the `from` attribute of the earlier study's trials refine is told


def warm_source(spec: StudySpec, store: Store) -> StudyRecord | None:
    """The study `spec` warm-starts from, checked; None when it declares none. A source
    that cannot serve raises StagetuneError with why (the API answers it as a 422)."""
    name = spec.warm_start_from
    if name is None:
        return None
    if name == spec.name:
        raise StagetuneError("warm_start_from names this study itself: name an earlier one")
    try:
        source = store.study(name)
    except StudyNotFoundError:
        raise StagetuneError(f"warm_start_from: no study named '{name}' in this store") from None
    if source.status not in ("completed", "stopped"):
        raise StagetuneError(f"warm_start_from: study '{name}' is {source.status}; warm-start "
                             "from a finished one")
    task, theirs = spec.task, source.spec.get("task") or {}
    if (task.dataset, task.model) != (theirs.get("dataset"), theirs.get("model")) or \
            task.main_objective != (theirs.get("objective") or
                                    (theirs.get("objectives") or [None])[0]):
        raise StagetuneError(
            f"warm_start_from: study '{name}' tuned {theirs.get('model')} on "
            f"{theirs.get('dataset')}, this one {task.model} on {task.dataset} (with the "
            "same objective both): what one learned would mislead the other")
    return source


def source_lr_ranges(source: StudyRecord, families: list[str]) -> dict[str, list[float]] | None:
    """The source's LR ranges, if its probe measured every one of `families`."""
    for stage in source.stages:
        ranges = stage.hand_on.get("lr_ranges") or {}
        if ranges and all(f in ranges for f in families):
            return {f: ranges[f] for f in families}
    return None


def prior_trials(store: Store, source: StudyRecord, declared: dict[str, Any], full: int
                 ) -> list[FrozenTrial]:
    """The source's coarse and refine trials as this refine's observations, each with its
    curve, if its parameters fit `declared`: complete with its value where it ran `full`
    epochs (a full trial here), else pruned, as refine is told coarse's."""
    dists = {d.name: distribution(d.param) for d in dims(declared)}
    out = []
    for stage in ("coarse", "refine"):
        for t in store.trials(source.name, stage):
            if t.state not in (TrialState.COMPLETE, TrialState.PRUNED) or \
                    not t.intermediate_values or not _fits(t.params, dists):
                continue
            out.append(told_trial(t, dists, full, {"from": TOLD, "study": source.name,
                                                   "stage": stage, "trial": t.number}))
    return out


def best_prior(priors: list[FrozenTrial], direction: str) -> FrozenTrial | None:
    """The earlier study's best full trial among `priors`: refine's first proposal."""
    whole = [t for t in priors if t.state == TrialState.COMPLETE and t.value is not None]
    if not whole:
        return None
    sign = 1.0 if direction == "maximize" else -1.0
    return max(whole, key=lambda t: sign * float(t.value or 0.0))


def _fits(params: dict[str, Any], dists: dict[str, BaseDistribution]) -> bool:
    """Whether every parameter is one of `dists`' and inside it."""
    try:
        return all(n in dists and dists[n]._contains(dists[n].to_internal_repr(v))
                   for n, v in params.items())
    except (ValueError, TypeError):  # a choice that is no longer declared
        return False
