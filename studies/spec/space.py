"""From the spec's space to Optuna parameters: conditional sampling, and narrowing.

A space entry is one parameter or several variants of it under disjoint `when` conditions
(lr per optimizer). Each variant is its own Optuna parameter (`lr[optimizer=adam/adamw]`),
so TPE models each optimizer's lr apart; a plain entry keeps the knob's name. Parameters
are drawn define-by-run: the unconditional ones first, then those whose condition holds.

Narrowing (written here: Optuna has no such function) takes the configurations coarse
found good at every rung and keeps, per numeric parameter, their envelope plus a margin
(on the log scale where the parameter is log), inside the declared range; categorical
choices seen among them are kept. It is a region for refine's prior, never a wall.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from stagetune.studies.spec.model import CategoricalParam, FloatParam, IntParam, Param, variants
from stagetune.workers.config import ModelConfig, TrainConfig

EDGE = 0.05  # within 5% of the range's width (log width for log params) counts as "at the edge"
SPREAD = 0.6  # good values spread over more than this share of the range say nothing of edges
MARGIN = 0.25  # the envelope grows by this share of its width (at least a tenth of the range)
Space = Mapping[str, Param | list[Param]]


@dataclass(frozen=True)
class Dim:
    """One Optuna parameter: a knob, or one variant of it, and when it is drawn."""

    name: str  # Optuna's name
    knob: str
    param: Param

    def applies(self, drawn: Mapping[str, Any]) -> bool:
        when = self.param.when or {}
        return all(drawn.get(key) in values for key, values in when.items())


def dims(space: Space) -> list[Dim]:
    """Every Optuna parameter of the space, unconditional ones first."""
    out = []
    for knob, entry in space.items():
        options = variants(entry)
        for param in options:
            name = knob if len(options) == 1 else f"{knob}[{_label(param)}]"
            out.append(Dim(name, knob, param))
    return sorted(out, key=lambda d: d.param.when is not None)


def _label(param: Param) -> str:
    when = param.when or {}
    return ";".join(f"{k}={'/'.join(map(str, v))}" for k, v in sorted(when.items()))


def knob_of(name: str) -> str:
    """The knob behind an Optuna parameter name (`lr[optimizer=sgd]` -> `lr`)."""
    return name.split("[", 1)[0]


def knobs(params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's Optuna parameters as knob values, for the training request."""
    return {knob_of(name): value for name, value in params.items()}


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """Draw the trial's parameters, each only when its condition holds."""
    drawn: dict[str, Any] = {}
    for dim in dims(space):
        if dim.applies({knob_of(k): v for k, v in drawn.items()}):
            drawn[dim.name] = _suggest_one(trial, dim.name, dim.param)
    return drawn


def _suggest_one(trial: optuna.Trial, name: str, p: Param) -> Any:
    if isinstance(p, FloatParam):
        return trial.suggest_float(name, p.low, p.high, log=p.log)
    if isinstance(p, IntParam):
        return trial.suggest_int(name, p.low, p.high, log=p.log)
    return trial.suggest_categorical(name, p.choices)  # type: ignore[arg-type]


def to_distributions(space: Space) -> dict[str, BaseDistribution]:
    """One Optuna distribution per parameter (conditional ones included)."""
    return {d.name: distribution(d.param) for d in dims(space)}


def distribution(p: Param) -> BaseDistribution:
    if isinstance(p, FloatParam):
        return FloatDistribution(p.low, p.high, log=p.log)
    if isinstance(p, IntParam):
        return IntDistribution(p.low, p.high, log=p.log)
    return CategoricalDistribution(p.choices)


def inside(name: str, value: Any, region: Mapping[str, Param]) -> bool:
    """Whether one parameter's value lies in the region (a parameter it lacks: yes)."""
    p = region.get(name)
    if p is None:
        return True
    if isinstance(p, CategoricalParam):
        return value in p.choices
    return p.low <= value <= p.high


@dataclass(frozen=True)
class Narrowed:
    """The region refine's prior favours (by Optuna name), and the parameters whose good
    values crowd an edge of the declared range, with what was done about it."""

    region: dict[str, Param]
    boundary: dict[str, str]  # name -> "low" or "high": an edge of the declared range
    widened: bool
    # name -> side: an edge of a range the study narrowed itself (the LR probe's), inside
    # the declared one: moved towards the declared bound without asking
    moved: dict[str, str] = field(default_factory=dict)

    def describe(self) -> list[str]:
        done = "widened past it" if self.widened else \
            "not widened past the declared range (stages.coarse.widen: true allows it)"
        return [f"{name}'s good values sit at the {side} edge of its declared range; {done}"
                for name, side in sorted(self.boundary.items())]

    def describe_moved(self) -> list[str]:
        return [f"{name}'s good values sit at the {side} edge of the LR probe's range, inside "
                "the declared one; refine's range reaches past it towards the declared bound"
                for name, side in sorted(self.moved.items())]


def narrow(space: Space, good: Sequence[optuna.trial.FrozenTrial], widen: bool = False,
           declared: Mapping[str, tuple[float, float]] | None = None) -> Narrowed:
    """The region where the `good` trials lie; past a crowded edge only if `widen`.
    `declared`, per Optuna name, the user's own bounds where the space holds a range the
    study narrowed itself: a crowded edge strictly inside them is moved towards them."""
    region: dict[str, Param] = {}
    boundary: dict[str, str] = {}
    moved: dict[str, str] = {}
    for dim in dims(space):
        p = dim.param.model_copy(update={"when": None})
        values = [t.params[dim.name] for t in good if dim.name in t.params]
        if len(values) < 2:
            region[dim.name] = p
        elif isinstance(p, CategoricalParam):
            kept = [c for c in p.choices if c in values]
            region[dim.name] = CategoricalParam(type="categorical", choices=kept or p.choices)
        else:
            outer = (declared or {}).get(dim.name)
            region[dim.name], side = _narrow_numeric(dim.knob, p, values, widen)
            if side and outer is not None and _inside_outer(p, side, outer):
                region[dim.name], _ = _narrow_numeric(dim.knob, p, values, True)
                region[dim.name] = _clip(region[dim.name], outer)
                moved[dim.name] = side
            elif side:
                boundary[dim.name] = side
    return Narrowed(region, boundary, widen, moved)


def _inside_outer(p: FloatParam | IntParam, side: str, outer: tuple[float, float]) -> bool:
    """Whether `p`'s edge on `side` lies strictly inside the declared bounds `outer`."""
    edge, bound = (p.low, outer[0]) if side == "low" else (p.high, outer[1])
    return not math.isclose(edge, bound, rel_tol=1e-9) and (
        edge > bound if side == "low" else edge < bound)


def _clip(p: Param, outer: tuple[float, float]) -> Param:
    """A widened range kept within the declared bounds."""
    assert isinstance(p, FloatParam | IntParam)
    return p.model_copy(update={"low": max(p.low, outer[0]), "high": min(p.high, outer[1])})


def _narrow_numeric(knob: str, p: FloatParam | IntParam, values: list[float], widen: bool
                    ) -> tuple[FloatParam | IntParam, str]:
    f, inv = (math.log, math.exp) if p.log else (float, float)
    lo0, hi0 = f(p.low), f(p.high)
    lo, hi = f(min(values)), f(max(values))
    width = hi0 - lo0
    pad = MARGIN * max(hi - lo, 0.2 * width)
    new_lo, new_hi = max(lo - pad, lo0), min(hi + pad, hi0)
    # An edge counts only when the good values crowd it, not when they span the range.
    side = ""
    if hi - lo < SPREAD * width:
        if lo - lo0 <= EDGE * width:
            side = "low"
            new_lo = lo0 - (hi - lo + pad) if widen else lo0
        elif hi0 - hi <= EDGE * width:
            side = "high"
            new_hi = hi0 + (hi - lo + pad) if widen else hi0
    # Exact declared bounds where clipped, so exp(log(x)) rounding never leaves the range.
    low = p.low if new_lo == lo0 else inv(new_lo)
    high = p.high if new_hi == hi0 else inv(new_hi)
    low, high = _within_limits(knob, low, high, p)
    if isinstance(p, IntParam):
        ilow, ihigh = math.floor(low), math.ceil(high)
        if ilow >= ihigh:
            ihigh = ilow + 1
        return IntParam(type="int", low=ilow, high=ihigh, log=p.log), side
    return FloatParam(type="float", low=low, high=high, log=p.log), side


def _within_limits(knob: str, low: float, high: float, p: FloatParam | IntParam
                   ) -> tuple[float, float]:
    """Keep a widened range inside the knob's own limits (lr >= 0, dropout < 1, ...)."""
    hard_low, hard_high = knob_limits(knob)
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
            value = float(bound)
            if attr in ("gt", "lt"):
                value = math.nextafter(value, math.inf if is_low else -math.inf)
            if is_low:
                low = max(low, value)
            else:
                high = min(high, value)
    return low, high


def dump_region(region: Mapping[str, Param]) -> dict[str, dict[str, Any]]:
    return {name: p.model_dump(exclude={"when"}) for name, p in region.items()}
