"""Confirm: re-run the top configurations with several seeds; the winner is the best mean."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from stagetune.studies.planning.budget import Allowance
from stagetune.studies.reporting.diagnosis import Diagnosis, diagnose
from stagetune.studies.reporting.numbers import readable, sig
from stagetune.studies.run.executor import Job
from stagetune.studies.search.loop import (
    Proposal,
    Reporter,
    checkpoint_epochs,
    close_cut,
    counted,
    fail_waiting,
    interrupted,
    resume_of,
    tally,
    tell,
)
from stagetune.studies.search.pareto import POINT, front, front_sentence
from stagetune.studies.search.stages._base import Stage, StageContext, StageOutcome, register_stage
from stagetune.studies.spec import CategoricalParam, StudySpec
from stagetune.studies.spec.model import variants
from stagetune.studies.store import extensions, wait_out
from stagetune.studies.store.weights import TrialCheckpoints, keep_weights

HEALTHY = ("saturated", "still_improving", "not_diagnosed")
# Search trials train with seed + trial number; confirm seeds start past any trial number,
# so no confirm run repeats the very run its configuration was selected on.
CONFIRM_SEED_OFFSET = 100_000


@register_stage
class Confirm(Stage):
    """Each (configuration, seed) pair is one Optuna trial carrying both as user attributes,
    so an interrupted confirm re-runs only the pairs it had not finished."""

    name = "confirm"

    def run(self, ctx: StageContext) -> StageOutcome:
        sizes = ctx.plan["confirm"].sizes
        configs = ctx.handed.get("top", [])[: sizes["top"]]
        if not configs and ctx.handed.get("top") and not sizes["top"]:
            planned = ctx.plan["confirm"].epochs
            return StageOutcome("skipped", (
                f"No configuration confirmed: confirm's share of the budget "
                f"({planned or 0:.3g} epochs) pays for no full {sizes['epochs']}-epoch run. "
                "Raise budget.epochs, or shorten confirm.epochs."))
        if not configs:
            return StageOutcome("skipped", "No configuration to confirm: no search stage ran.")
        if not sizes["seeds"]:
            return StageOutcome("skipped", "The budget leaves no room to confirm: its share "
                                "(stages.confirm.share) pays for less than one full run.")
        epochs = sizes["epochs"]
        study = ctx.store.optuna_study(ctx.spec.name, self.name, ctx.direction, metric=ctx.objective)
        fail_waiting(study, "not run: its runner stopped before it began; it runs again")
        before = tally(study)
        allowance = ctx.allowance(self.name, before.epochs, before.seconds)
        pairs = [(i, s) for i in range(len(configs)) for s in range(sizes["seeds"])]
        round_ = extensions(ctx.store.url, ctx.spec.name)  # an extended study confirms anew
        self._run_missing(ctx, study, configs, pairs, epochs, allowance, round_)
        fail_waiting(study, "not run: confirm ended first")
        return self._judge(ctx, study, configs, round_)

    def _run_missing(self, ctx: StageContext, study: optuna.Study, configs: list[dict[str, Any]],
                     pairs: list[tuple[int, int]], epochs: int, allowance: Allowance,
                     round_: int) -> None:
        """Run the pairs of this round not finished yet: first those a dead runner left
        running, each continued in its own trial (`studies.search.loop.interrupted`),
        then the others."""
        def done() -> set[tuple[int, int]]:
            return {(t.user_attrs["config"], t.user_attrs["seed"]) for t in counted(study)
                    if "config" in t.user_attrs and _round(t) == round_}

        resumed = interrupted(ctx, self.name, study,
                              lambda trial: Proposal(trial, configs[trial.user_attrs["config"]]))
        for proposal in resumed:  # spent within the dead runner's reservations: it fits
            allowance.charge(proposal.earlier.epochs, proposal.earlier.seconds)

        def jobs(missing: list[tuple[int, int]]) -> Iterator[Job]:
            for proposal in resumed:
                granted = int(allowance.reserve(epochs - proposal.start))
                if granted < epochs - proposal.start:  # a shortened run confirms nothing
                    allowance.settle(granted, 0)
                    wait_out(close_cut, study, proposal, scored=False)
                    TrialCheckpoints(proposal.trial, latest=proposal.earlier.checkpoint).discard()
                    continue
                yield self._job(ctx, proposal, epochs, allowance, granted)
            for index, seed in missing:
                granted = int(allowance.reserve(epochs))
                if granted < epochs:
                    allowance.settle(granted, 0)
                    return
                # while trials run, the database is waited for (studies.search.loop)
                wait_out(study.enqueue_trial, configs[index],
                         user_attrs={"config": index, "seed": seed, "round": round_})
                trial = wait_out(study.ask, distributions)  # the pair just queued
                yield self._job(ctx, Proposal(trial, configs[trial.user_attrs["config"]]),
                                epochs, allowance, granted)

        distributions = _covering(configs, ctx.spec, study)
        going_on = {(p.trial.user_attrs["config"], p.trial.user_attrs["seed"]) for p in resumed}
        missing = [p for p in pairs if p not in done() and p not in going_on]
        finished = len(pairs) - len(missing) - len(going_on)
        ctx.tick(self.name, finished, len(pairs))
        for outcome in ctx.executor.run(jobs(missing)):
            if outcome.result is not None and outcome.result.state_dict is not None:
                # before tell: then it is final
                wait_out(keep_weights, outcome.job.key, outcome.result.state_dict)
            tell(ctx, study, outcome)
            if isinstance(outcome.job.save, TrialCheckpoints):
                outcome.job.save.discard()  # the weights are kept; nothing continues it
            finished += not outcome.cancelled
            ctx.tick(self.name, finished, len(pairs))

    def _job(self, ctx: StageContext, proposal: Proposal, epochs: int, allowance: Allowance,
             granted: int) -> Job:
        """A pair's run: all `epochs` (after its checkpoint, for a continued one), its
        weights back, checkpointing as the search stages do."""
        trial = proposal.trial
        request = ctx.request("train", proposal.params, epochs,
                              seed=ctx.spec.seed + CONFIRM_SEED_OFFSET + trial.user_attrs["seed"],
                              weights=True, resume=resume_of(proposal),
                              checkpoint_at=checkpoint_epochs(proposal.start, epochs, epochs))
        report = Reporter(ctx, self.name, trial, False, allowance,
                          proposal.earlier.epochs + granted, epochs,
                          values=list(proposal.replayed.values()), earlier=proposal.earlier)
        # always one: it discards what an interrupted run left, even with none to hand over
        return Job(trial, request, report,
                   TrialCheckpoints(trial, latest=proposal.earlier.checkpoint))

    def _judge(self, ctx: StageContext, study: optuna.Study, configs: list[dict[str, Any]],
               round_: int) -> StageOutcome:
        trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if _round(t) == round_]
        by_config: dict[int, list[optuna.trial.FrozenTrial]] = {}
        for t in trials:
            by_config.setdefault(t.user_attrs["config"], []).append(t)
        spent = tally(study).epochs
        if not by_config:
            return StageOutcome("failed", "Every confirm run failed: see the trials' messages.",
                                epochs=spent)
        sign = 1 if ctx.direction == "maximize" else -1
        means = {i: statistics.fmean(t.value for t in ts) for i, ts in by_config.items()}  # type: ignore[misc]
        winner = max(means, key=lambda i: sign * means[i])
        runs = sorted(by_config[winner], key=lambda t: t.value)  # type: ignore[arg-type, return-value]
        values = [t.value for t in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0  # type: ignore[type-var]
        median_run = runs[len(runs) // 2]
        curve = ctx.store.curves(ctx.spec.name, self.name).get(median_run.number, [])
        diagnosis = _diagnosis(curve, ctx)
        figures = {"configs": [{"params": configs[i], "mean": means[i],
                                "values": [t.value for t in by_config[i]]} for i in by_config],
                   "winner": winner, "mean": means[winner], "std": spread,
                   "diagnosis": {"kind": diagnosis.kind, "message": diagnosis.message,
                                 "fix": diagnosis.fix, **diagnosis.figures},
                   "median_trial": median_run.number}
        message = (f"The winner scores {ctx.objective} {sig(means[winner])} ± {readable(spread)} over "
                   f"{len(values)} seeds. Its curves: {diagnosis.message} {diagnosis.fix}")
        goal = ctx.spec.goal
        if goal is not None:
            reached = (means[winner] >= goal) == (ctx.direction == "maximize")
            message += f" The goal {goal:g} is {'reached' if reached else 'not reached'}."
        best_run = runs[-1] if ctx.direction == "maximize" else runs[0]
        hand_on = {"best": {"params": configs[winner], "value": means[winner], "std": spread,
                            "seeds": len(values), "stage": self.name},
                   "weights": {"artifact_id": best_run.user_attrs.get("weights"),
                               "trial": best_run.number, "value": best_run.value},
                   "diagnosis": figures["diagnosis"]}
        if ctx.objectives:
            confirmed = confirmed_front(ctx, configs, by_config)
            figures |= confirmed
            message += " " + front_sentence(ctx.objectives, len(confirmed["front"]),
                                            len(by_config))
        verdict = "passed" if diagnosis.kind in HEALTHY else "warned"
        return StageOutcome(verdict, message, figures, hand_on, epochs=spent,
                            trial_seconds=tally(study).seconds)


def confirmed_front(ctx: StageContext, configs: list[dict[str, Any]],
                    by_config: dict[int, list[optuna.trial.FrozenTrial]]) -> dict[str, Any]:
    """The configurations whose mean point over their seeds no other's beats on every
    objective, with each objective's mean and spread, and the weights of their best run
    (`GET /api/studies/{id}/model?config=N` hands them over)."""
    names = [name for name, _ in ctx.objectives]
    sign = 1 if ctx.direction == "maximize" else -1
    runs = {i: [t for t in ts if POINT in t.user_attrs] for i, ts in by_config.items()}
    means = {i: [statistics.fmean(t.user_attrs[POINT][n] for t in ts) for n in names]
             for i, ts in runs.items() if ts}
    entries = []
    for i in front(means, [d for _, d in ctx.objectives]):
        values = {n: [t.user_attrs[POINT][n] for t in runs[i]] for n in names}
        best_run = max(runs[i], key=lambda t: sign * t.user_attrs[POINT][names[0]])
        entries.append({"config": i, "params": configs[i], "seeds": len(runs[i]),
                        "means": dict(zip(names, means[i], strict=True)),
                        "std": {n: statistics.stdev(v) if len(v) > 1 else 0.0
                                for n, v in values.items()},
                        "weights": {"artifact_id": best_run.user_attrs.get("weights"),
                                    "trial": best_run.number,
                                    "value": best_run.user_attrs[POINT][names[0]]}})
    return {"objectives": [list(o) for o in ctx.objectives], "front": entries}


def _round(trial: optuna.trial.FrozenTrial) -> int:
    """The confirm round a run belongs to: 0, then one more per extension of the study."""
    return int(trial.user_attrs.get("round", 0))


def _covering(configs: list[dict[str, Any]], spec: StudySpec, study: optuna.Study
              ) -> dict[str, BaseDistribution]:
    """One distribution per parameter spanning every configuration's value. Optuna needs
    the same kind for a name across a study's trials, and the same choices for a
    categorical one: those an earlier round recorded, else every choice the spec declares,
    so that a later round (an extended study) can confirm other configurations."""
    recorded: dict[str, BaseDistribution] = {}
    for t in study.get_trials(deepcopy=False):
        recorded |= t.distributions
    out: dict[str, BaseDistribution] = {}
    for name in configs[0]:
        values = [c[name] for c in configs]
        if isinstance(recorded.get(name), CategoricalDistribution):
            out[name] = recorded[name]
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[name] = IntDistribution(min(values), max(values))
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[name] = FloatDistribution(min(values), max(values))
        else:
            entry = spec.space.get(name)
            declared = [c for p in (variants(entry) if entry is not None else [])
                        if isinstance(p, CategoricalParam) for c in p.choices]
            out[name] = CategoricalDistribution(sorted(set(values) | set(declared), key=str))
    return out


def _diagnosis(curve: list[dict[str, Any]], ctx: StageContext) -> Diagnosis:
    """The winner's curves diagnosed; a trainer of the user's that reports less than the
    built-in loop gets a sentence saying what its curves lack."""
    missing = sorted({k for m in curve for k in ("train_loss", "val_loss", ctx.objective)
                      if k not in m})
    if missing:
        return Diagnosis("not_diagnosed", "The curves cannot be diagnosed: the run did not "
                         f"report {', '.join(missing)} each epoch.",
                         "Report train_loss and val_loss with the objective each epoch to have "
                         "the curves diagnosed.")
    # init_check measured whether the model is affine, as the baseline is: a judgement
    # that it must beat the baseline would fail by construction
    return diagnose(curve, ctx.objective, ctx.direction, ctx.handed.get("baseline"),
                    linear_model=bool(ctx.handed.get("affine_model")))
