"""The two search stages: coarse (quasi-random, short) and refine (Bayesian, pruned)."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from pydantic import TypeAdapter

from studies.search import run_trials, top_trials
from studies.space import narrow
from studies.spec import CategoricalParam, FloatParam, IntParam, Param
from studies.stages._base import Stage, StageContext, StageOutcome, register_stage

SPACE = TypeAdapter(dict[str, Param])


def search_space(ctx: StageContext) -> dict[str, Param]:
    """The spec's space, with lr set to the LR probe's range when the user fixed none."""
    space = dict(ctx.spec.space)
    if "lr_range" in ctx.handed and "lr" not in ctx.spec.fixed:
        low, high = ctx.handed["lr_range"]
        space["lr"] = FloatParam(type="float", low=low, high=high, log=True)
    return space


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in sorted(params.items()))


@register_stage
class Coarse(Stage):
    """Quasi-random (or random) search over the whole space on a short budget. It hands
    on a narrowed space and its best configurations; if every trial fails, it stops the
    study, since there is nothing to refine."""

    name, gate = "coarse", True

    def run(self, ctx: StageContext) -> StageOutcome:
        cfg = self.config
        with warnings.catch_warnings():  # QMCSampler is stable in use, "experimental" in name
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler: optuna.samplers.BaseSampler = (
                optuna.samplers.QMCSampler(seed=ctx.spec.seed, scramble=True,
                                           warn_independent_sampling=False)
                if cfg.sampler == "qmc" else optuna.samplers.RandomSampler(seed=ctx.spec.seed))
        space = search_space(ctx)
        study = ctx.store.optuna_study(ctx.spec.name, self.name, ctx.direction, sampler)
        tally = run_trials(ctx, self.name, study, space, cfg.trials, cfg.epochs, prune=False)
        done = study.get_trials(deepcopy=False)
        figures: dict[str, Any] = {"trials": tally.total, "completed": tally.completed,
                                   "failed": tally.failed, "diverged": tally.diverged,
                                   "diverged_fraction": tally.diverged / max(tally.total, 1)}
        if not tally.completed:
            return StageOutcome("failed", f"All {tally.total} coarse trials failed or diverged: "
                                "check the failures' messages, and narrow the space (a smaller "
                                "lr range first).", figures, epochs=tally.epochs)
        narrowed = narrow(space, done, ctx.direction)
        best = study.best_trial
        warm = ctx.spec.stages.refine.warm_start
        top = [t.params for t in top_trials(study, max(warm, ctx.spec.stages.confirm.top))]
        figures |= {"best_value": best.value, "best_params": best.params,
                    "boundary": narrowed.boundary,
                    "space": {k: v.model_dump() for k, v in narrowed.space.items()}}
        verdict = "warned" if figures["diverged_fraction"] > 0.5 or narrowed.boundary else "passed"
        message = (f"{tally.total} trials, {tally.diverged} diverged "
                   f"({figures['diverged_fraction']:.0%}); best {ctx.objective} {best.value:.4g} "
                   f"with {_fmt_params(best.params)}.")
        for line in narrowed.describe():
            message += f" {line[0].upper()}{line[1:]}."
        if figures["diverged_fraction"] > 0.5:
            message += " Most trials diverged: lower the lr range or add grad_clip."
        hand_on = {"space": figures["space"], "top": top,
                   "best": {"params": best.params, "value": best.value, "stage": self.name}}
        return StageOutcome(verdict, message, figures, hand_on, epochs=tally.epochs)


@register_stage
class Refine(Stage):
    """Bayesian search (TPE or GP) on the narrowed space, warm-started with the best
    coarse configurations, pruning on the per-epoch validation metric."""

    name = "refine"

    def run(self, ctx: StageContext) -> StageOutcome:
        cfg = self.config
        space = SPACE.validate_python(ctx.handed["space"]) if "space" in ctx.handed \
            else search_space(ctx)
        sampler: optuna.samplers.BaseSampler = (
            optuna.samplers.TPESampler(seed=ctx.spec.seed, multivariate=True,
                                       n_startup_trials=min(10, max(cfg.trials // 3, 1)))
            if cfg.sampler == "tpe" else optuna.samplers.GPSampler(seed=ctx.spec.seed))
        pruner: optuna.pruners.BasePruner = {
            "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
            "hyperband": lambda: optuna.pruners.HyperbandPruner(
                min_resource=1, max_resource=cfg.epochs, reduction_factor=3),
            "none": optuna.pruners.NopPruner,
        }[cfg.pruner]()
        study = ctx.store.optuna_study(ctx.spec.name, self.name, ctx.direction, sampler, pruner)
        if not study.get_trials(deepcopy=False):
            for params in ctx.handed.get("top", [])[: cfg.warm_start]:
                study.enqueue_trial(_clip(params, space), skip_if_exists=True)
        tally = run_trials(ctx, self.name, study, space, cfg.trials, cfg.epochs, prune=True)
        figures: dict[str, Any] = {"trials": tally.total, "completed": tally.completed,
                                   "pruned": tally.pruned, "failed": tally.failed,
                                   "diverged": tally.diverged}
        if not tally.completed:
            return StageOutcome("failed", f"No refine trial completed ({tally.pruned} pruned, "
                                f"{tally.failed} failed).", figures, epochs=tally.epochs)
        best = study.best_trial
        top = [t.params for t in top_trials(study, ctx.spec.stages.confirm.top)]
        figures |= {"best_value": best.value, "best_params": best.params}
        message = (f"{tally.total} trials ({tally.pruned} pruned, {tally.failed} failed); best "
                   f"{ctx.objective} {best.value:.4g} with {_fmt_params(best.params)}.")
        hand_on = {"top": top, "best": {"params": best.params, "value": best.value,
                                        "stage": self.name}}
        return StageOutcome("passed", message, figures, hand_on, epochs=tally.epochs)


def _clip(params: dict[str, Any], space: dict[str, Param]) -> dict[str, Any]:
    """Keep a warm-start configuration inside the (narrowed) space."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        p = space.get(name)
        if isinstance(p, CategoricalParam):
            if value in p.choices:
                out[name] = value
        elif isinstance(p, IntParam):
            out[name] = int(round(min(max(value, p.low), p.high)))
        elif isinstance(p, FloatParam):
            out[name] = float(min(max(value, p.low), p.high))
    return out
