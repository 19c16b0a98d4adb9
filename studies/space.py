"""From the spec's space to Optuna distributions, and narrowing it after a coarse search.

Narrowing (written here: Optuna has no such function): per numeric parameter, the
envelope of the best quantile of trials plus a margin, on the log scale where the
parameter is log, clipped to the original range; categorical choices are kept if
they appear among the best. A parameter whose best values sit at the edge of its
original range is flagged, and its range is widened past that edge by one envelope
width (within the knob's hard limits), since the optimum may lie beyond it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from studies.spec import CategoricalParam, FloatParam, IntParam, Param
from workers.config import ModelConfig, TrainConfig

EDGE = 0.05  # within 5% of the range's width (log width for log params) counts as "at the edge"
SPREAD = 0.6  # best values spread over more than this share of the range say nothing of edges


def to_distributions(space: Mapping[str, Param]) -> dict[str, BaseDistribution]:
    """One Optuna distribution per tunable parameter."""
    out: dict[str, BaseDistribution] = {}
    for name, p in space.items():
        if isinstance(p, FloatParam):
            out[name] = FloatDistribution(p.low, p.high, log=p.log)
        elif isinstance(p, IntParam):
            out[name] = IntDistribution(p.low, p.high, log=p.log)
        else:
            out[name] = CategoricalDistribution(p.choices)
    return out


@dataclass(frozen=True)
class Narrowed:
    """The narrowed space and the parameters whose best values sat at an edge."""

    space: dict[str, Param]
    boundary: dict[str, str]  # name -> "low" or "high"

    def describe(self) -> list[str]:
        return [f"{name}'s best values sit at the {side} edge of its range; widened past it"
                for name, side in sorted(self.boundary.items())]


def narrow(
    space: Mapping[str, Param],
    trials: Sequence[optuna.trial.FrozenTrial],
    direction: str,
    quantile: float = 0.25,
    margin: float = 0.25,
) -> Narrowed:
    """Narrow `space` to where the best `quantile` of completed `trials` lie."""
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    if not done:
        return Narrowed(dict(space), {})
    done.sort(key=lambda t: t.value, reverse=direction == "maximize")  # type: ignore[arg-type, return-value]
    best = done[: max(2, math.ceil(quantile * len(done)))]
    new: dict[str, Param] = {}
    boundary: dict[str, str] = {}
    for name, p in space.items():
        values = [t.params[name] for t in best if name in t.params]
        if not values:
            new[name] = p
        elif isinstance(p, CategoricalParam):
            kept = [c for c in p.choices if c in values]
            new[name] = CategoricalParam(type="categorical", choices=kept or p.choices)
        else:
            new[name], side = _narrow_numeric(name, p, values, margin)
            if side:
                boundary[name] = side
    return Narrowed(new, boundary)


def _narrow_numeric(
    name: str, p: FloatParam | IntParam, values: list[float], margin: float
) -> tuple[FloatParam | IntParam, str]:
    f, inv = (math.log, math.exp) if p.log else (float, float)
    lo0, hi0 = f(p.low), f(p.high)
    lo, hi = f(min(values)), f(max(values))
    width = hi0 - lo0
    pad = margin * max(hi - lo, 0.1 * width)
    new_lo, new_hi = max(lo - pad, lo0), min(hi + pad, hi0)
    # An edge counts only when the best values crowd it, not when they span the range.
    side = ""
    if hi - lo < SPREAD * width:
        if lo - lo0 <= EDGE * width:
            side, new_lo = "low", lo0 - (hi - lo + pad)
        elif hi0 - hi <= EDGE * width:
            side, new_hi = "high", hi0 + (hi - lo + pad)
    # Exact original bounds where clipped, so exp(log(x)) rounding never leaves the range.
    low = p.low if new_lo == lo0 else inv(new_lo)
    high = p.high if new_hi == hi0 else inv(new_hi)
    low, high = _within_limits(name, low, high, p)
    if isinstance(p, IntParam):
        ilow, ihigh = math.floor(low), math.ceil(high)
        if ilow >= ihigh:
            ihigh = ilow + 1
        return IntParam(type="int", low=ilow, high=ihigh, log=p.log), side
    return FloatParam(type="float", low=low, high=high, log=p.log), side


def _within_limits(name: str, low: float, high: float, p: FloatParam | IntParam) -> tuple[float, float]:
    """Keep a widened range inside the knob's own limits (lr >= 0, dropout < 1, ...)."""
    hard_low, hard_high = knob_limits(name)
    if p.log:
        hard_low = max(hard_low, 1e-12)
    low = max(low, hard_low)
    high = min(high, hard_high)
    if isinstance(p, FloatParam) and high <= low:
        high = min(p.high, hard_high)
        low = min(low, high * (1 - 1e-6)) if high > 0 else low
    return low, high


def knob_limits(name: str) -> tuple[float, float]:
    """The inclusive-ish bounds a knob accepts, read from its pydantic field constraints."""
    field = TrainConfig.model_fields.get(name) or ModelConfig.model_fields.get(name)
    low, high = -math.inf, math.inf
    for meta in getattr(field, "metadata", []):
        for attr, is_low in (("ge", True), ("gt", True), ("le", False), ("lt", False)):
            bound = getattr(meta, attr, None)
            if bound is None:
                continue
            strict = attr in ("gt", "lt")
            value = float(bound)
            if strict:
                value = math.nextafter(value, math.inf if is_low else -math.inf)
            if is_low:
                low = max(low, value)
            else:
                high = min(high, value)
    return low, high
