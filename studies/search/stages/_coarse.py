"""Coarse: successive halving (ASHA, Optuna's SuccessiveHalvingPruner) over quasi-random
configurations, from 1-epoch rungs up to the last coarse rung.

Every trial's schedule spans a full trial (refine's epochs), so a survivor can continue
from its last-rung checkpoint in refine exactly as if it had never stopped. It hands on
the region the good configurations lie in (from every rung, not only the last), the
survivors with their checkpoints, and what each rung saw.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from stagetune.studies.planning.budget import Allowance
from stagetune.studies.planning.plan import minimum_budget
from stagetune.studies.reporting.numbers import readable, sig
from stagetune.studies.search.loop import (
    Proposal,
    SearchPlan,
    Tally,
    run_trials,
    tally,
    top_trials,
)
from stagetune.studies.search.lr_ranges import declared_space, probed_space
from stagetune.studies.search.stages._base import Stage, StageContext, StageOutcome, register_stage
from stagetune.studies.search.stages._chance import (
    at_chance,
    best_value,
    chance_bound,
    chance_trials,
    known_bound,
    stray_reach,
    stuck_at_chance,
)
from stagetune.studies.search.stages._lr_check import missed_ranges
from stagetune.studies.spec import StudySpec
from stagetune.studies.spec.model import CategoricalParam, FloatParam, IntParam, variants
from stagetune.studies.spec.space import Narrowed, dims, dump_region, knob_limits, knobs, narrow, suggest

EARLY = "early"  # the user attribute of a trial drawn beside the probes, from the declared space


def fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={readable(v)}" for k, v in sorted(params.items()))


@register_stage
class Coarse(Stage):
    """If every trial fails, it stops the study, since there is nothing to refine; so it
    does when the baseline and the trials all stay at chance level (`studies.search.stages._chance`):
    the labels do not match the inputs, and no search can fix that."""

    name, gate = "coarse", True

    def run(self, ctx: StageContext) -> StageOutcome:
        levels: list[int] = ctx.plan["coarse"].sizes["rungs"]
        space = probed_space(ctx.spec, ctx.handed.get("lr_ranges", {}))
        study = self.study(ctx)
        done = self._search(ctx, study, space, ctx.plan["coarse"].sizes["trials"])
        trials = study.get_trials(deepcopy=False)
        figures: dict[str, Any] = {
            "trials": done.total, "completed": done.completed, "pruned": done.pruned,
            "failed": done.failed, "diverged": done.diverged,
            "diverged_fraction": done.diverged / max(done.total, 1),
            "early": sum(bool(t.user_attrs.get(EARLY)) for t in trials),
            "rungs": rung_table(trials, levels, ctx.direction),
            "searched": dump_region({d: p for d, p in _flat(space).items()})}
        stuck = _chance_level(ctx, trials, figures)
        # Past a chance-level stop (a spec that says to go on), refine does not diagnose:
        # every trial would be stopped as hopeless, and the user asked for a result.
        marked = {"chance_stuck": True} if stuck else {}
        if not done.completed:
            allowance = ctx.allowance(self.name, done.epochs, done.seconds)  # what is left
            return StageOutcome("failed", stuck or none_finished(ctx.spec, trials, allowance,
                                                                 levels, done.total),
                                figures, marked, epochs=done.epochs, trial_seconds=done.seconds)
        outcome = self._judge(ctx, study, space, trials, levels, figures, done)
        if stuck:  # what it found is kept, for a spec that says to go on past a failed gate
            outcome.verdict, outcome.message = "failed", stuck
            outcome.hand_on |= marked
        return outcome

    def early(self, ctx: StageContext, count: int, **plan: Any) -> Tally:
        """Coarse's first `count` configurations, drawn from the declared space while the
        probes run (`studies.search.stages._early`): ordinary coarse trials, marked EARLY;
        `plan` sets the SearchPlan's stop, halt, keep and on_job."""
        return self._search(ctx, self.study(ctx), declared_space(ctx.spec, {}), count,
                            early=True, **plan)

    def study(self, ctx: StageContext) -> optuna.Study:
        """Coarse's Optuna study: its sampler, and ASHA over its rungs."""
        levels: list[int] = ctx.plan["coarse"].sizes["rungs"]
        return ctx.store.optuna_study(
            ctx.spec.name, self.name, ctx.direction, _sampler(self.config.sampler, ctx.spec.seed),
            optuna.pruners.SuccessiveHalvingPruner(min_resource=levels[0],
                                                   reduction_factor=self.config.reduction),
            metric=ctx.objective)

    def _search(self, ctx: StageContext, study: optuna.Study, space: dict[str, Any],
                trials: int, early: bool = False, **plan: Any) -> Tally:
        """Run coarse's trials on `space` until `trials` of them are finished; an early
        trial a dead runner left running goes on with what it drew from the declared space."""
        levels: list[int] = ctx.plan["coarse"].sizes["rungs"]
        before = tally(study)
        allowance = ctx.allowance(self.name, before.epochs, before.seconds)
        declared = space if early else declared_space(ctx.spec, {})

        def propose(trial: optuna.Trial) -> Proposal:
            if early:
                trial.set_user_attr(EARLY, True)
            drawn = declared if trial.user_attrs.get(EARLY) else space
            return Proposal(trial, knobs(suggest(trial, drawn)))

        search = SearchPlan(trials=trials, epochs=levels[-1],
                            # a full trial's schedule, or coarse's own if the spec made
                            # its last rung longer than a full trial
                            horizon=max(ctx.spec.stages.refine.epochs, levels[-1]),
                            checkpoint_at=tuple(levels), prune=True,
                            diagnose=self.config.diagnose, **plan)
        return run_trials(ctx, self.name, study, allowance, search, propose)

    def _judge(self, ctx: StageContext, study: optuna.Study, space: dict[str, Any],
               trials: list[FrozenTrial], levels: list[int], figures: dict[str, Any],
               done: Any) -> StageOutcome:
        narrowed = movable_edges(space, narrow(space, good_trials(
            trials, levels, ctx.direction, self.config.reduction,
            known_bound(ctx.handed, ctx.direction)), self.config.widen,
            declared_bounds(ctx.spec, space)))
        # a family's probed lr range with no trial that learned: refine's prior lets it go
        missed = missed_ranges(ctx.spec, ctx.handed, space, trials, ctx.direction)
        region = {n: p for n, p in narrowed.region.items() if n not in {m.param for m in missed}}
        best = study.best_trial
        survivors = [t for t in top_trials(study, ctx.spec.stages.refine.warm_start)
                     if t.user_attrs.get("checkpoint")]
        top = [knobs(t.params) for t in top_trials(study, ctx.spec.stages.confirm.top)]
        figures |= {"best_value": best.value, "best_params": knobs(best.params),
                    "boundary": narrowed.boundary, "space": dump_region(region),
                    "lr_ranges_missed": [m.family for m in missed]}
        many_bad = figures["diverged_fraction"] > 0.5
        verdict = "warned" if many_bad or narrowed.boundary or missed else "passed"
        early = (f", the first {figures['early']} drawn from the declared space beside the "
                 "probes" if figures["early"] else "")
        message = (f"{done.total} configurations over rungs {', '.join(map(str, levels))} "
                   f"(epochs){early}; {done.diverged} diverged "
                   f"({figures['diverged_fraction']:.0%})")
        if "chance_fraction" in figures:
            message += f", {figures['chance_fraction']:.0%} stayed at chance level"
        message += (f"; best {ctx.objective} {readable(best.value)} at epoch {levels[-1]} with "
                    f"{fmt_params(knobs(best.params))}.")
        for line in narrowed.describe() + narrowed.describe_moved() + [
                m.sentence(ctx.objective) for m in missed]:
            message += f" {line[0].upper()}{line[1:]}."
        if many_bad:
            message += " Most trials diverged: lower the lr range or add grad_clip."
        hand_on = {"space": figures["space"], "top": top,
                   "survivors": [{"number": t.number, "value": t.value, "params": t.params,
                                  **t.user_attrs["checkpoint"]} for t in survivors],
                   "best": {"params": knobs(best.params), "value": best.value,
                            "stage": self.name}}
        return StageOutcome(verdict, message, figures, hand_on, epochs=done.epochs,
                            trial_seconds=done.seconds)


def none_finished(spec: StudySpec, trials: list[FrozenTrial], allowance: Allowance,
                  levels: list[int], total: int) -> str:
    """Why no trial reached the last rung: the budget ran out (raise it), or the trials
    were pruned, failed or diverged (look at the space)."""
    cut = sum(t.user_attrs.get("status") == "cut_by_budget" for t in trials)
    if not (cut or total == 0 or allowance.out_of_seconds()):
        return (f"All {total} coarse trials were pruned, failed or diverged before the last "
                "rung: check the failures' messages, and narrow the space (a smaller lr range "
                "first).")
    budget = spec.budget
    raise_it = "raise budget.seconds" if allowance.out_of_seconds() else "raise budget.epochs"
    if budget is not None and budget.epochs is not None:
        raise_it += f" (this spec's stages need at least {minimum_budget(spec)} epochs)"
    return (f"The budget ran out before any coarse trial reached the last rung ({levels[-1]} "
            f"epochs; {total} started, {cut} cut short by the budget): {raise_it}, or disable "
            "stages, shorten refine.epochs or coarse.epochs. The space was not judged.")


def declared_bounds(spec: StudySpec, space: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Per Optuna name of `space`, the user's own bounds where the study replaced a
    declared numeric range with one of its own (the LR probe's, per optimizer family)."""
    out = {}
    for dim in dims(space):
        entry = spec.space.get(dim.knob)
        options = variants(entry) if entry is not None else []
        if len(options) != 1 or not isinstance(options[0], FloatParam | IntParam):
            continue
        mine = dim.param
        if isinstance(mine, FloatParam | IntParam) and (mine.low, mine.high) != (
                options[0].low, options[0].high):
            out[dim.name] = (options[0].low, options[0].high)
    return out


def movable_edges(space: dict[str, Any], narrowed: Narrowed) -> Narrowed:
    """`narrowed` with only the edges a person could move: a declared bound that is the
    knob's own limit (dropout 0, depth 1) cannot be widened, so good values there say
    the limit is right, not that the range is too narrow."""
    declared = {d.name: d for d in dims(space)}
    kept = {}
    for name, side in narrowed.boundary.items():
        dim = declared.get(name)
        if dim is None or isinstance(dim.param, CategoricalParam):
            kept[name] = side
            continue
        low, high = knob_limits(dim.knob)
        bound, limit = (dim.param.low, low) if side == "low" else (dim.param.high, high)
        # an exclusive limit (dropout < 1) is read as the float just inside it
        if not math.isclose(bound, limit, rel_tol=1e-9, abs_tol=1e-12):
            kept[name] = side
    return dataclasses.replace(narrowed, boundary=kept)


def _sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # QMCSampler is stable in use, "experimental" in name
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, scramble=True,
                                              warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)


def _flat(space: dict[str, Any]) -> dict[str, Any]:
    return {d.name: d.param for d in dims(space)}


def _chance_level(ctx: StageContext, trials: list[FrozenTrial], figures: dict[str, Any]
                  ) -> str | None:
    """Record how many trials stayed at chance level; the sentence that stops the study
    when the baseline and the scored trials did, but for a few lucky strays
    (`studies.search.stages._chance.stuck_at_chance`)."""
    chance, baseline = ctx.handed.get("chance"), ctx.handed.get("baseline")
    if chance is None:  # no baseline ran, or its objective has no chance level
        return None
    direction = ctx.direction
    bound = chance_bound(ctx.handed, direction)
    scored, hopeless = chance_trials(trials, bound, direction)
    _, lucky = chance_trials(scored, stray_reach(chance, bound), direction)  # strays too
    # Stopped on their vital signs before a first score: they learnt nothing either.
    stalled = [t for t in trials if t.user_attrs.get("status") == "hopeless"
               and best_value(t, direction) is None]
    values = [v for v in (best_value(t, direction) for t in scored) if v is not None]
    scored, hopeless, lucky = scored + stalled, hopeless + stalled, lucky + stalled
    figures |= {"chance": chance, "chance_bound": bound, "chance_trials": len(hopeless),
                "chance_fraction": len(hopeless) / max(figures["trials"], 1)}
    if not stuck_at_chance(len(scored), len(hopeless), len(lucky)) \
            or not at_chance(baseline, bound, direction):
        return None
    strays = len(scored) - len(hopeless)
    best = (max(values) if direction == "maximize" else min(values)) if values else chance
    name = ctx.objective.removeprefix("val_")
    what = f"Validation {name}" if name != ctx.objective else ctx.objective
    reach = stray_reach(chance, bound)
    noise = (f"; {strays} above {sig(bound)}, what luck alone reaches, but within {sig(reach)}"
             if strays else "")
    return (f"{what} stays at chance level (best {sig(best)} against chance {sig(chance)} over "
            f"{len(scored)} trials, baseline {readable(baseline)}{noise}): the labels carry no "
            "information about the inputs; check that labels and inputs are paired (shuffled "
            "or misaligned labels, a wrong label column, augmentation that destroys the "
            "signal).")


def rung_values(trials: list[FrozenTrial], epoch: int) -> list[tuple[FrozenTrial, float]]:
    return [(t, t.intermediate_values[epoch]) for t in trials
            if epoch in t.intermediate_values and math.isfinite(t.intermediate_values[epoch])]


def good_trials(trials: list[FrozenTrial], levels: list[int], direction: str,
                reduction: int, chance: float | None = None) -> list[FrozenTrial]:
    """The best 1/reduction of the trials at every rung: where narrowing looks. With
    `chance` (the chance-level bound), only those that beat it at that rung: the best of
    a bad lot says nothing about where the good region is."""
    good: dict[int, FrozenTrial] = {}
    for epoch in levels:
        ranked = sorted(rung_values(trials, epoch), key=lambda tv: tv[1],
                        reverse=direction == "maximize")
        for t, value in ranked[:max(2, math.ceil(len(ranked) / reduction))]:
            if chance is None or not at_chance(value, chance, direction):
                good[t.number] = t
    return list(good.values())


def rung_table(trials: list[FrozenTrial], levels: list[int], direction: str
               ) -> list[dict[str, Any]]:
    """Per rung: how many trials reached it, how many went on, and its best value."""
    out = []
    for i, epoch in enumerate(levels):
        reached = rung_values(trials, epoch)
        nxt = levels[i + 1] if i + 1 < len(levels) else None
        went_on = [t for t, _ in reached if nxt is not None and nxt in t.intermediate_values]
        values = [v for _, v in reached]
        out.append({"epoch": epoch, "reached": len(reached),
                    "promoted": len(went_on) if nxt is not None else None,
                    "finished": sum(t.state == TrialState.COMPLETE for t, _ in reached),
                    "best": (max(values) if direction == "maximize" else min(values))
                    if values else None,
                    "trials": [t.number for t, _ in reached]})
    return out
