"""Refine's CMA-ES (`stages.refine.sampler: cmaes`): Optuna's CmaEsSampler, warm-started
from coarse's trials (Warm-Starting CMA-ES, Nomura et al. 2021, through the cmaes package).

Its warm start is its prior, so refine gives it no soft region (`studies.search.samplers`)."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import FrozenTrial

# Warm-starting CMA-ES estimates
# its first distribution from the best 10% of the source solutions: it needs 10 at least.
CMA_SOURCES = 10


def cma_es(seed: int, sources: list[FrozenTrial]) -> optuna.samplers.BaseSampler:
    """CMA-ES over the numeric knobs every trial has (categorical and conditional ones are
    drawn at random), warm-started from `sources` where there are enough of them."""
    with warnings.catch_warnings():  # source_trials is stable in use, "experimental" in name
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warm = len(sources) >= CMA_SOURCES
        # pruned trials count, with their last value: refine's own cut at a rung, and
        # coarse's told ones, which give its search space from the first trial on
        return _CmaEsFromCoarse(  # warm: no random start-up trial
            seed=seed, warn_independent_sampling=False, n_startup_trials=0 if warm else 1,
            consider_pruned_trials=True,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
            source_trials=sources if warm else None)


class _CmaEsFromCoarse(optuna.samplers.CmaEsSampler):
    """Optuna's CMA-ES, whose search space counts pruned trials too: coarse's trials,
    told to refine as pruned, name it before refine's first trial completes (Optuna's
    counts complete ones only, so its first trial would be drawn at random)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._with_pruned = IntersectionSearchSpace(include_pruned=True)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return {name: d for name, d in self._with_pruned.calculate(study).items()
                if isinstance(d, FloatDistribution | IntDistribution) and not d.single()}
