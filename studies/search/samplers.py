"""Refine's sampler: Bayesian optimisation with the coarse region as a soft prior.

Optuna has no sampler that favours a region without forbidding the rest, so this wraps
one: a stated share of trials (`explore`, chosen by a seeded draw per trial number) is
drawn uniformly from the whole declared space; the others come from the base sampler
(TPE or GP), redrawn a few times until they fall inside the narrowed region, else drawn
uniformly inside it. The base sampler learns from every trial either way.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from stagetune.studies.spec import CategoricalParam, Param
from stagetune.studies.spec.space import inside

REDRAWS = 8


class SoftPriorSampler(BaseSampler):
    def __init__(self, base: BaseSampler, region: Mapping[str, Param], explore: float,
                 seed: int) -> None:
        self._base, self._region, self._explore, self._seed = base, dict(region), explore, seed
        self._random = RandomSampler(seed=seed)

    def explores(self, number: int) -> bool:
        """Whether trial `number` is drawn from the whole space (seeded, so a resume agrees)."""
        return random.Random(f"{self._seed}:{number}").random() < self._explore

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return self._base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space or self.explores(trial.number):
            return {}  # every parameter then comes from sample_independent
        params: dict[str, Any] = {}
        for _ in range(REDRAWS):
            params = self._base.sample_relative(study, trial, search_space)
            if all(inside(n, v, self._region) for n, v in params.items()):
                return params
        return {n: self._clip(n, v, search_space[n]) for n, v in params.items()}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if self.explores(trial.number):
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        value = None
        for _ in range(REDRAWS):
            value = self._base.sample_independent(study, trial, param_name, param_distribution)
            if inside(param_name, value, self._region):
                return value
        return self._clip(param_name, value, param_distribution)

    def _clip(self, name: str, value: Any, distribution: BaseDistribution) -> Any:
        p = self._region.get(name)
        if p is None or inside(name, value, self._region):
            return value
        if isinstance(p, CategoricalParam):
            allowed = [c for c in p.choices if isinstance(distribution, CategoricalDistribution)
                       and c in distribution.choices]
            return allowed[0] if allowed else value
        # A draw inside the region, not its edge: clipping would pile trials on one bound.
        rng = random.Random(f"{self._seed}:{name}:{value}")
        if getattr(p, "log", False):
            inner = math.exp(rng.uniform(math.log(p.low), math.log(p.high)))
        else:
            inner = rng.uniform(p.low, p.high)
        return int(round(inner)) if isinstance(value, int) else inner

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        self._base.after_trial(study, trial, state, values)
