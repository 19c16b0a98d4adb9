"""The plan: how a study's budget is shared among its stages, by one stated rule.

With `budget: {epochs: B}` (and/or `seconds: S`, shared the same way):

- the probes get caps in epoch equivalents: init_check 1% of B, overfit 5%, the LR
  probe 6% (split among the optimizer families it probes); the data check (hashes of a
  sample) and the baseline (a linear model) cost no epochs;
- confirm gets at most `confirm.share` (15%) of B: as many E-epoch runs as fit, spread
  over `seeds` seeds of the `top` configurations (fewer of each when few runs fit, none
  when not even one fits);
- of the rest, coarse gets 25% and refine 75% (10% and 90% for a study warm-started from an
  earlier one, whose trials refine is told: coarse then mainly finds survivors to
  continue). Coarse is successive halving from 1-epoch
  rungs, so one configuration costs about 1 + sum over rungs of (rung gap / reduction^k)
  epochs; coarse tries as many as its share pays for. Refine runs trials until its share
  is spent.

A stage may use what earlier stages left unspent, never what later stages were planned.
An epoch budget must give coarse at least two configurations (one where `coarse.trials` is 1)
and refine one full trial (`shortfalls`); submit refuses a smaller one, naming the minimum.
A stage section set in the spec (coarse.trials, refine.trials, confirm.top, ...) overrides
the plan's number, and the budget still caps it. Without a budget the sections alone size
the search stages, and the plan records what they are expected to cost; the probes get the
same shares of that cost as of a budget (their shares of the whole study), so that on a
small dataset, where a probe's fixed steps are many epochs, they stay a small part of it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from stagetune.studies.spec import Budget, StudySpec

PROBE_SHARES = {"init_check": 0.01, "overfit": 0.05, "lr_probe": 0.06}
COARSE_SHARE = 0.25  # of what the probes and confirm leave
WARM_COARSE_SHARE = 0.10  # the same, for a study with warm_start_from
UNBOUNDED_TRIALS = 10_000  # "as many as the budget pays for"
MIN_COARSE_CONFIGS = 2  # successive halving needs configurations to compare
MAX_BUDGET_EPOCHS = 1_000_000  # the spec's bound on budget.epochs


@dataclass(frozen=True)
class StagePlan:
    """A stage's allowance (None: not capped) and the sizes it runs with."""

    epochs: float | None = None
    seconds: float | None = None
    sizes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rungs(first: int, last: int, reduction: int) -> list[int]:
    """Successive-halving rungs: first, first*reduction, ... and last itself."""
    out = [first]
    while out[-1] * reduction < last:
        out.append(out[-1] * reduction)
    return out if out[-1] == last else [*out, last]


def coarse_rungs(spec: StudySpec) -> list[int]:
    """Coarse's rungs: from 1 epoch to its last rung, by default the largest rung at most
    a full trial's length over the reduction factor, so survivors still have epochs
    left to continue in refine."""
    coarse, full = spec.stages.coarse, spec.stages.refine.epochs
    return rungs(1, coarse.epochs or max(1, full // coarse.reduction), coarse.reduction)


def cost_per_config(levels: list[int], reduction: int) -> float:
    """Expected epochs one coarse configuration costs under successive halving."""
    cost = float(levels[0])
    for k in range(1, len(levels)):
        cost += (levels[k] - levels[k - 1]) / reduction ** k
    return cost


def make_plan(spec: StudySpec) -> dict[str, StagePlan]:
    """Each stage's allowance and sizes, by the rule in this module's docstring."""
    stages, budget = spec.stages, spec.budget
    full = stages.refine.epochs
    confirm_epochs = stages.confirm.epochs or full
    levels = coarse_rungs(spec)
    per_config = cost_per_config(levels, stages.coarse.reduction)
    if budget is None:
        return _from_sections(spec, levels, per_config, confirm_epochs)

    plan: dict[str, StagePlan] = {"data_check": StagePlan(0.0, None),
                                  "baseline": StagePlan(0.0, None)}
    b_epochs, b_seconds = budget.epochs, budget.seconds
    used = {"epochs": 0.0, "seconds": 0.0}

    def share(fraction: float) -> tuple[float | None, float | None]:
        e = fraction * b_epochs if b_epochs is not None else None
        s = fraction * b_seconds if b_seconds is not None else None
        used["epochs"] += e or 0.0
        used["seconds"] += s or 0.0
        return e, s

    for name, fraction in PROBE_SHARES.items():
        if getattr(stages, name).enabled:
            e, s = share(fraction)
            plan[name] = StagePlan(e, s, {"max_epochs": e})
    plan["confirm"] = _confirm_plan(spec, confirm_epochs, share)
    left_e = b_epochs - used["epochs"] if b_epochs is not None else None
    left_s = b_seconds - used["seconds"] if b_seconds is not None else None
    coarse_on, refine_on = stages.coarse.enabled, stages.refine.enabled
    c_frac = (WARM_COARSE_SHARE if spec.warm_start_from else COARSE_SHARE) if refine_on else 1.0
    c_e = left_e * c_frac if left_e is not None and coarse_on else None if left_e is None else 0.0
    c_s = left_s * c_frac if left_s is not None and coarse_on else None if left_s is None else 0.0
    trials = _explicit(stages.coarse, "trials")
    if trials is None:
        trials = max(MIN_COARSE_CONFIGS, math.floor(c_e / per_config)) if c_e is not None \
            else UNBOUNDED_TRIALS
    plan["coarse"] = StagePlan(c_e, c_s, {"trials": trials, "rungs": levels,
                                          "reduction": stages.coarse.reduction})
    r_e = left_e - (c_e or 0.0) if left_e is not None else None
    r_s = left_s - (c_s or 0.0) if left_s is not None else None
    plan["refine"] = StagePlan(r_e, r_s, {
        "trials": _explicit(stages.refine, "trials") or UNBOUNDED_TRIALS, "epochs": full})
    return {name: plan[name] for name in ("data_check", "baseline", *PROBE_SHARES, "coarse",
                                          "refine", "confirm") if name in plan}


def needs(spec: StudySpec) -> dict[str, tuple[float, str]]:
    """The least each enabled search stage must be given, in epochs, and what that buys:
    coarse its smallest number of configurations through its rungs, refine one full trial."""
    stages, out = spec.stages, {}
    if stages.coarse.enabled:
        levels = coarse_rungs(spec)
        configs = min(MIN_COARSE_CONFIGS, _explicit(stages.coarse, "trials") or MIN_COARSE_CONFIGS)
        out["coarse"] = (configs * cost_per_config(levels, stages.coarse.reduction),
                         f"{configs} configurations over rungs {', '.join(map(str, levels))}")
    if stages.refine.enabled:
        out["refine"] = (float(stages.refine.epochs), f"one full trial of {stages.refine.epochs} "
                                                      "epochs")
    return out


def shortfalls(spec: StudySpec, epochs: float) -> list[str]:
    """What the plan under `budget.epochs = epochs` gives a search stage short of its
    `needs`, in words (empty: every stage can run)."""
    budget = Budget.model_construct(epochs=epochs, seconds=None)
    plan = make_plan(spec.model_copy(update={"budget": budget}))
    return [f"{stage} needs {need:.3g} ({why}) and would get {plan[stage].epochs or 0.0:.3g}"
            for stage, (need, why) in needs(spec).items()
            if (plan[stage].epochs or 0.0) + 1e-9 < need]


def minimum_budget(spec: StudySpec) -> int:
    """The fewest whole epochs under which the plan gives every search stage its `needs`
    (found with the plan itself, whose shares only grow with the budget)."""
    low, high = 1, 1
    while shortfalls(spec, high):
        low, high = high + 1, high * 2
        if high > MAX_BUDGET_EPOCHS:
            return MAX_BUDGET_EPOCHS
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if shortfalls(spec, middle) else (low, middle)
    return high


def _confirm_plan(spec: StudySpec, epochs: int, share: Any) -> StagePlan:
    cfg = spec.stages.confirm
    if not cfg.enabled:
        return StagePlan(0.0, 0.0, {"top": 0, "seeds": 0, "epochs": epochs})
    e, s = share(cfg.share)
    # a budget in seconds only leaves the sections to size it
    runs = math.floor(e / epochs + 1e-9) if e is not None else cfg.top * cfg.seeds
    seeds = _explicit(cfg, "seeds") or min(cfg.seeds, runs)
    top = _explicit(cfg, "top") or (min(cfg.top, runs // seeds) if seeds else 0)
    if e is not None:
        e = min(e, top * seeds * epochs)
    return StagePlan(e, s, {"top": top, "seeds": seeds, "epochs": epochs})


def _from_sections(spec: StudySpec, levels: list[int], per_config: float,
                   confirm_epochs: int) -> dict[str, StagePlan]:
    """No budget: the sections size the stages; the plan holds their expected cost."""
    s = spec.stages
    expected = {
        "coarse": s.coarse.trials * per_config if s.coarse.enabled else 0.0,
        "refine": s.refine.trials * s.refine.epochs if s.refine.enabled else 0.0,
        "confirm": s.confirm.top * s.confirm.seeds * confirm_epochs if s.confirm.enabled else 0.0,
    }
    # the search's expected cost is what the probes' shares leave of the whole study
    whole = sum(expected.values()) / (1 - sum(PROBE_SHARES.values()))
    probes = {name: StagePlan(fraction * whole, None, {"max_epochs": fraction * whole})
              if whole > 0 else StagePlan() for name, fraction in PROBE_SHARES.items()}
    return {
        "data_check": StagePlan(),
        "baseline": StagePlan(),
        **probes,
        "coarse": StagePlan(sizes={"trials": s.coarse.trials, "rungs": levels,
                                   "reduction": s.coarse.reduction,
                                   "expected_epochs": expected["coarse"]}),
        "refine": StagePlan(sizes={"trials": s.refine.trials, "epochs": s.refine.epochs,
                                   "expected_epochs": expected["refine"]}),
        "confirm": StagePlan(sizes={"top": s.confirm.top, "seeds": s.confirm.seeds,
                                    "epochs": confirm_epochs,
                                    "expected_epochs": expected["confirm"]}),
    }


def _explicit(section: Any, name: str) -> Any:
    """A section's value when the spec set it (it overrides the plan), else None."""
    return getattr(section, name) if name in section.model_fields_set else None
