"""Refine: Bayesian search on the whole declared space, told what coarse saw.

- The best coarse survivors continue from their checkpoints to a full trial, with their
  coarse epochs replayed to Optuna first, so they are judged on their whole curve.
- Every other coarse trial is added to the study as a pruned trial with its per-epoch
  values and the rungs it reached: TPE then ranks it against refine's own trials (Optuna
  ranks pruned trials by how far they got, then by their last value) and ASHA compares
  refine's trials against coarse's rung values from the first proposal on.
- New proposals come from TPE (multivariate, grouped for conditional parameters) or GP,
  inside the narrowed region except for the `explore` share drawn from the whole space.
- It stops when its share of the budget is spent, when a trial reaches the spec's goal,
  or after `patience` trials without a new best.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState, create_trial
from pydantic import TypeAdapter

from stagetune.studies.reporting.numbers import readable
from stagetune.studies.search.cma import CMA_SOURCES, cma_es
from stagetune.studies.search.loop import (
    NOT_RUN,
    Proposal,
    SearchPlan,
    fail_waiting,
    run_trials,
    tally,
    told_trial,
    top_trials,
)
from stagetune.studies.search.lr_ranges import declared_space
from stagetune.studies.search.pareto import (
    ParetoSampler,
    front_entries,
    front_sentence,
    spread,
    trial_front,
)
from stagetune.studies.search.samplers import SoftPriorSampler
from stagetune.studies.search.stages._base import Stage, StageContext, StageOutcome, register_stage
from stagetune.studies.search.stages._coarse import fmt_params
from stagetune.studies.search.warm_start import TOLD, best_prior, prior_trials, warm_source
from stagetune.studies.spec import CategoricalParam, Param
from stagetune.studies.spec.space import dims, distribution, knobs, suggest

REGION = TypeAdapter(dict[str, Param])


@register_stage
class Refine(Stage):
    name = "refine"

    def run(self, ctx: StageContext) -> StageOutcome:
        cfg, plan = self.config, ctx.plan["refine"]
        declared = declared_space(ctx.spec, ctx.handed.get("lr_ranges", {}))
        region = REGION.validate_python(ctx.handed.get("space", {}))
        sampler: optuna.samplers.BaseSampler
        multi = len(ctx.objectives) > 1
        if multi:  # the front is its prior: it draws on the declared space
            sampler, drawn = ParetoSampler(ctx.objectives, ctx.spec.seed), \
                "the front so far (multi-objective TPE)"
        elif cfg.sampler == "cmaes":  # its warm start is its prior: no soft region around it
            sources = _first_rung_trials(ctx, declared)
            sampler = cma_es(ctx.spec.seed, sources)
            drawn = "CMA-ES, warm-started from coarse's first rung" \
                if len(sources) >= CMA_SOURCES else "CMA-ES"
        else:
            drawn = ""  # each proposal says (drawn_from below)
            sampler = SoftPriorSampler(_base_sampler(cfg.sampler, ctx.spec.seed), region,
                                       cfg.explore if region else 0.0, ctx.spec.seed)
        study = ctx.store.optuna_study(ctx.spec.name, self.name, ctx.direction, sampler,
                                       _pruner(cfg.pruner, cfg.epochs,
                                               ctx.spec.stages.coarse.reduction),
                                       metric=ctx.objective)
        if not study.get_trials(deepcopy=False):
            earlier = warm_source(ctx.spec, ctx.store)
            if earlier is not None:  # first: its best runs before coarse's survivors go on
                priors = prior_trials(ctx.store, earlier, declared, cfg.epochs)
                study.add_trials(priors)
                best = best_prior(priors, ctx.direction)
                if best is not None:
                    study.enqueue_trial(best.params, user_attrs={
                        "drawn_from": f"the best trial of study {earlier.name}"})
            self._seed_from_coarse(ctx, study, declared, plan.sizes["trials"])
        before = tally(study)
        allowance = ctx.allowance(self.name, before.epochs, before.seconds)
        coarse = {t.number: t for t in ctx.store.trials(ctx.spec.name, "coarse")}

        def drawn_from(number: int) -> str:
            if isinstance(sampler, SoftPriorSampler):
                return "the whole space" if sampler.explores(number) else "the narrowed region"
            return drawn

        def propose(trial: optuna.Trial) -> Proposal:
            params = knobs(suggest(trial, declared))
            source = trial.user_attrs.get("continues")
            if source is None:
                if "drawn_from" not in trial.user_attrs:  # (queued: the earlier study's best)
                    trial.set_user_attr("drawn_from", drawn_from(trial.number))
                return Proposal(trial, params)
            return _continuation(trial, params, coarse[source])

        # no later stage continues a refine trial: its checkpoints serve a lost worker or
        # a restarted runner only (studies.search.loop)
        # no pruning by rungs for a front: a smaller model learns slower and would be cut
        search = SearchPlan(trials=plan.sizes["trials"], epochs=cfg.epochs, horizon=cfg.epochs,
                            prune=cfg.pruner != "none" and not multi,
                            diagnose=cfg.diagnose and not ctx.handed.get("chance_stuck"),
                            stop=_stop_rule(ctx, study, cfg.patience))
        done = run_trials(ctx, self.name, study, allowance, search, propose)
        fail_waiting(study, "not run: refine ended first (its budget share was spent, or a "
                     "stop rule held)")
        own = [t for t in study.get_trials(deepcopy=False) if "from" not in t.user_attrs
               and t.user_attrs.get("status") != NOT_RUN]
        figures: dict[str, Any] = {
            "trials": len(own), "completed": sum(t.state == TrialState.COMPLETE for t in own),
            "pruned": sum(t.state == TrialState.PRUNED for t in own),
            "failed": sum(t.state == TrialState.FAIL for t in own), "diverged": done.diverged,
            "continued": sum("continues" in t.user_attrs for t in own),
            "explored": sum(t.user_attrs.get("drawn_from") == "the whole space" for t in own),
            "told_from_coarse": sum(t.user_attrs.get("from") == "coarse"
                                    for t in study.get_trials(deepcopy=False)),
            "told_from_earlier_study": sum(t.user_attrs.get("from") == TOLD
                                           for t in study.get_trials(deepcopy=False))}
        if not figures["completed"]:
            return StageOutcome("failed", f"No refine trial completed ({figures['pruned']} "
                                f"pruned, {figures['failed']} failed).", figures,
                                epochs=done.epochs, trial_seconds=done.seconds)
        best = study.best_trial
        top = [knobs(t.params) for t in top_trials(study, max(ctx.spec.stages.confirm.top, 1))]
        figures |= {"best_value": best.value, "best_params": knobs(best.params),
                    "stopped_by": _why_stopped(ctx, study, cfg.patience)}
        message = (f"{figures['trials']} trials ({figures['continued']} continued from coarse, "
                   f"{figures['explored']} drawn from the whole space, {figures['pruned']} "
                   f"pruned, {figures['failed']} failed); best {ctx.objective} {readable(best.value)} "
                   f"with {fmt_params(knobs(best.params))}.")
        if figures["stopped_by"]:
            message += f" Stopped early: {figures['stopped_by']}."
        hand_on = {"top": top, "best": {"params": knobs(best.params), "value": best.value,
                                        "stage": self.name}}
        if multi:
            on = trial_front(own, ctx.objectives)
            figures |= {"objectives": [list(o) for o in ctx.objectives],
                        "front": front_entries(on)}
            confirms = ctx.plan["confirm"].sizes["top"] if "confirm" in ctx.plan else 1
            hand_on["top"] = [knobs(t.params) for t in spread(on, confirms)]
            message += " " + front_sentence(ctx.objectives, len(on), len(own))
        return StageOutcome("passed", message, figures, hand_on, epochs=done.epochs,
                            trial_seconds=done.seconds)

    def _seed_from_coarse(self, ctx: StageContext, study: optuna.Study,
                          declared: dict[str, Any], trials: int) -> None:
        """Continue the best survivors, as many as refine runs trials; tell the sampler
        and pruner every other coarse trial."""
        full = self.config.epochs
        survivors = [s for s in ctx.handed.get("survivors", []) if s["epoch"] < full][:trials]
        continued = {s["number"] for s in survivors}
        dists = {d.name: distribution(d.param) for d in dims(declared)}
        for t in ctx.store.trials(ctx.spec.name, "coarse"):
            if t.number in continued or not t.intermediate_values or \
                    not set(t.params) <= set(dists):
                continue
            study.add_trial(told_trial(
                t, dists, full, {"from": "coarse", "coarse_trial": t.number},
                {k: v for k, v in t.system_attrs.items() if k.startswith("completed_rung_")}))
        for s in survivors:
            study.enqueue_trial(s["params"], user_attrs={
                "continues": s["number"], "checkpoint_from": s["artifact_id"],
                "start": s["epoch"]})


def _continuation(trial: optuna.Trial, params: dict[str, Any], source: FrozenTrial
                  ) -> Proposal:
    """A coarse survivor picks up after its checkpoint. Its coarse epochs go along, told to
    Optuna first and shown to the pruner, so that ASHA records the rungs it passed
    (`studies.search.loop.replay`); coarse already promoted it through those, so refine judges
    it from the next rung on."""
    start = int(trial.user_attrs["start"])
    replayed = {step: value for step, value in source.intermediate_values.items()
                if step <= start and math.isfinite(value)}
    return Proposal(trial, params, start=start, checkpoint=trial.user_attrs["checkpoint_from"],
                    replayed=replayed)


def _first_rung_trials(ctx: StageContext, declared: dict[str, Any]) -> list[FrozenTrial]:
    """Coarse's trials as CMA-ES's source solutions: each with its value at the first rung
    (the one every trial reached, so the values compare) and only the knobs CMA-ES models:
    the numeric ones that are not conditional (its search space must match exactly)."""
    rungs = ctx.plan["coarse"].sizes.get("rungs") if "coarse" in ctx.plan else None
    if not rungs:
        return []
    numeric = {d.name: distribution(d.param) for d in dims(declared)
               if not isinstance(d.param, CategoricalParam) and d.param.when is None}
    out = []
    for t in ctx.store.trials(ctx.spec.name, "coarse"):
        value = t.intermediate_values.get(rungs[0])
        if value is None or not math.isfinite(value) or not set(numeric) <= set(t.params):
            continue
        out.append(create_trial(value=value, params={n: t.params[n] for n in numeric},
                                distributions=numeric))
    return out if numeric else []


def _base_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      constant_liar=True, n_startup_trials=5)


def _pruner(kind: str, epochs: int, reduction: int) -> optuna.pruners.BasePruner:
    if kind == "asha":
        base: optuna.pruners.BasePruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=reduction)
    elif kind == "hyperband":
        base = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs,
                                              reduction_factor=reduction)
    elif kind == "median":
        base = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    else:
        return optuna.pruners.NopPruner()
    return FirstHalfPruner(base, epochs)


class FirstHalfPruner(optuna.pruners.BasePruner):
    """`base`, asked only in the first half of a trial: a cut later saves less than half
    the epochs the trial already cost (ASHA's rungs for 10-epoch trials are 1, 3 and 9: a
    trial cut at 9 had run 90% of its length). Optuna's pruners take no last step (a
    wrapper is Optuna's own way to add one, as its PatientPruner does)."""

    def __init__(self, base: optuna.pruners.BasePruner, epochs: int) -> None:
        self.base, self.last_step = base, epochs // 2

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        return step is not None and step <= self.last_step and self.base.prune(study, trial)


def _own_complete(study: optuna.Study) -> list[FrozenTrial]:
    return sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                   if "from" not in t.user_attrs), key=lambda t: t.number)


def _why_stopped(ctx: StageContext, study: optuna.Study, patience: int) -> str:
    """Which stop rule holds now, in words ('' when none does). With several objectives,
    patience counts the trials in a row that are not on the front."""
    done = _own_complete(study)
    if not done:
        return ""
    sign = 1 if ctx.direction == "maximize" else -1
    goal = ctx.spec.goal
    if goal is not None and any(sign * t.value >= sign * goal for t in done):  # type: ignore[operator]
        return f"a trial reached the goal {goal:g}"
    if patience and len(done) > patience and ctx.objectives:
        on = {t.number for t in trial_front(done, ctx.objectives)}
        if not on & {t.number for t in done[-patience:]}:
            return f"{patience} trials in a row did not join the front"
    elif patience and len(done) > patience:
        best_at = max(range(len(done)), key=lambda i: (sign * done[i].value, -i))  # type: ignore[operator]
        if len(done) - 1 - best_at >= patience:
            return f"{patience} trials in a row did not improve on the best"
    return ""


def _stop_rule(ctx: StageContext, study: optuna.Study, patience: int) -> Callable[[], bool]:
    return lambda: bool(_why_stopped(ctx, study, patience))
