"""Whether the LR probe's range for an optimizer family left out every lr that learns.

Coarse draws each family's lr inside the range the probe measured for it. When not one of
a family's coarse trials gets past chance level while the trials of another family do, or
the baseline does, the range is the likeliest cause: the model and data can learn, and this
family was given only lrs that do not (the probe's curve can mislead it, as a loss that
falls fastest at an lr too large to train at). Refine then draws that family's lr from the
whole declared range, as a prior the narrowed region no longer holds it to.

Judged at chance level (`studies.search.stages._chance`), so it needs an objective with one:
classification's accuracy-like metrics, not a regression's error; and only on trials drawn
inside the probed range that were not cut by the rung pruner after one epoch (`_judged`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial

from stagetune.studies.reporting.numbers import sig
from stagetune.studies.search.lr_ranges import FAMILIES, families_in
from stagetune.studies.search.stages._chance import at_chance, best_value, chance_bound
from stagetune.studies.spec import FloatParam, StudySpec
from stagetune.studies.spec.space import Dim, dims

MIN_TRIALS = 2  # a family judged on fewer scored trials could be unlucky, not mis-ranged


@dataclass(frozen=True)
class Missed:
    """A family whose probed lr range held no trial that learned."""

    family: str
    param: str  # its lr's Optuna name in coarse's space
    low: float
    high: float
    trials: int
    best: float
    against: str  # what did learn, in words

    def sentence(self, objective: str) -> str:
        return (f"none of the {self.trials} {self.family} trials learned inside the LR "
                f"probe's range for {self.family} ({sig(self.low)}-{sig(self.high)}): best "
                f"{objective} {sig(self.best)}, where {self.against}; the probe's range for "
                f"{self.family} looks wrong, so refine draws its lr from the whole range "
                "declared for it (declare lr in the space to give it one beyond the probe's)")


def missed_ranges(spec: StudySpec, handed: Mapping[str, Any], space: dict[str, Any],
                  trials: list[FrozenTrial], direction: str) -> list[Missed]:
    """The families whose probed lr range left out every lr that learns (see the module)."""
    if not handed.get("lr_ranges") or handed.get("chance") is None:
        return []
    bound = chance_bound(handed, direction)
    families = families_in(spec)
    by_family: dict[str, list[float]] = {}
    for t in trials:
        value = best_value(t, direction)
        family = _family_of(t.params, families)
        if value is not None and family is not None and _judged(t, _lr_of(space, family)):
            by_family.setdefault(family, []).append(value)
    learned = {f: [v for v in vs if not at_chance(v, bound, direction)]
               for f, vs in by_family.items()}
    baseline = handed.get("baseline")
    out = []
    for family, values in by_family.items():
        lr = _lr_of(space, family)
        if lr is None or family not in handed["lr_ranges"] or len(values) < MIN_TRIALS \
                or learned[family]:
            continue
        others = {f: max(vs) if direction == "maximize" else min(vs)
                  for f, vs in learned.items() if vs and f != family}
        if others:
            against = ", ".join(f"{f} reached {sig(v)}" for f, v in sorted(others.items()))
        elif baseline is not None and not at_chance(baseline, bound, direction):
            against = f"the baseline reached {sig(baseline)}"
        else:
            continue  # nothing learned anywhere: a data problem, judged at chance level
        best = max(values) if direction == "maximize" else min(values)
        out.append(Missed(family, lr.name, lr.param.low, lr.param.high,  # type: ignore[union-attr]
                          len(values), best, against))
    return out


def _judged(trial: FrozenTrial, lr: Dim | None) -> bool:
    """Whether a trial speaks for its family's probed range: drawn inside it (not one of
    coarse's early trials drawn from the declared range), and not cut by the rung pruner
    after its first epoch, which says only that others were ahead then (one epoch at
    chance level is common on imbalanced data, where chance level is high)."""
    drawn = trial.params.get(lr.name) if lr is not None else None
    if drawn is None or not lr.param.low <= drawn <= lr.param.high:  # type: ignore[union-attr]
        return False
    return not (trial.user_attrs.get("status") == "stopped" and len(trial.intermediate_values) <= 1)


def _lr_of(space: dict[str, Any], family: str) -> Dim | None:
    """The lr coarse drew for a family's trials: its own variant, or the one lr."""
    for dim in dims(space):
        if dim.knob == "lr" and isinstance(dim.param, FloatParam) and (
                dim.param.when is None
                or set(dim.param.when.get("optimizer", [])) & set(FAMILIES[family])):
            return dim
    return None


def _family_of(params: Mapping[str, Any], families: Mapping[str, str]) -> str | None:
    """The optimizer family a trial trained with: its drawn optimizer, else the only one."""
    optimizer = params.get("optimizer")
    if optimizer is None:
        return next(iter(families)) if len(families) == 1 else None
    return next((f for f, members in FAMILIES.items() if optimizer in members), None)
