"""The ask-run-tell loop shared by the search stages, resumable from the store.

Optuna numbers the trials, so a number is never given twice; a trial that was
running when a runner died is told FAIL on resume and its budget slot is spent.
Each trial reserves the epochs it may run from its stage's allowance before it starts
(`studies.budget`), and is charged one epoch per report.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from stagetune.studies.budget import Allowance
from stagetune.studies.executor import Job, Outcome
from stagetune.studies.stages._base import StageContext
from stagetune.studies.stages._chance import at_chance, chance_bound, learning
from stagetune.studies.store import is_database_error
from stagetune.studies.weights import TrialCheckpoints

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
NOT_RUN = "not_run"  # the status of a queued trial closed because its stage ended first


@dataclass
class Tally:
    """What a search stage did, from the Optuna study (so it counts resumed work too)."""

    total: int
    completed: int
    pruned: int
    failed: int
    diverged: int
    epochs: float
    seconds: float = 0.0


@dataclass
class Proposal:
    """A trial to run: its knob values, the epoch it starts after (a continuation) and the
    checkpoint it continues from."""

    trial: optuna.Trial
    params: dict[str, Any]
    start: int = 0
    resume: bytes | None = None
    replayed: list[float] = field(default_factory=list)  # values it brought from coarse


@dataclass
class SearchPlan:
    """How a stage runs its trials: how many, how long, where they checkpoint, whether
    they may be pruned, and when to stop asking."""

    trials: int
    epochs: int  # the last epoch a trial runs
    horizon: int  # the epochs its LR schedule spans
    checkpoint_at: tuple[int, ...] = ()
    prune: bool = False
    diagnose: bool = False  # stop hopeless trials early (see `Reporter`)
    stop: Callable[[], bool] = field(default=lambda: False)


def fail_orphans(study: optuna.Study) -> int:
    """Mark trials left running by a dead runner as failed; they are not re-run."""
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for frozen in orphans:
        trial = optuna.trial.Trial(study, frozen._trial_id)  # a handle on the running trial
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("message", "its runner stopped while it ran (a restart); the "
                            "study went on without it")
        study.tell(trial, state=TrialState.FAIL)
        log.warning("%s: trial %d was running when its runner stopped; marked failed",
                    study.study_name, frozen.number)
    return len(orphans)


def fail_waiting(study: optuna.Study, why: str) -> int:
    """Close the trials still queued (enqueued warm starts or confirm runs that never ran),
    so that none outlives its stage: failed, with status `not_run` and `why`."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    for _ in waiting:
        trial = study.ask()  # takes the oldest queued trial
        trial.set_user_attr("status", NOT_RUN)
        trial.set_user_attr("message", why)
        study.tell(trial, state=TrialState.FAIL)
    return len(waiting)


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Finished trials that spend budget: every one but those stopped by a cancel, which
    a resumed study runs again, those that never ran, and coarse's trials told to
    refine's sampler."""
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED)
            if t.user_attrs.get("status") not in ("cancelled", NOT_RUN)
            and t.user_attrs.get("from") != "coarse"]


def run_trials(ctx: StageContext, stage: str, study: optuna.Study, allowance: Allowance,
               plan: SearchPlan, propose: Callable[[], Proposal | None]) -> Tally:
    """Ask, run and tell until the stage holds `plan.trials` finished trials, its
    allowance is spent, or `plan.stop()` says so."""
    fail_orphans(study)
    finished = len(counted(study))
    ctx.tick(stage, finished, plan.trials)

    def jobs() -> Iterator[Job]:  # asked one by one, as slots free up
        for _ in range(plan.trials - finished):
            left = allowance.epochs_left
            if plan.stop() or allowance.out_of_seconds() or (left is not None and left < 1):
                return
            proposal = propose()
            if proposal is None:
                continue  # the stage settled it without running it
            granted = int(allowance.reserve(plan.epochs - proposal.start))
            trial = proposal.trial
            if granted < 1:
                trial.set_user_attr("status", "cut_by_budget")
                study.tell(trial, state=TrialState.FAIL)
                return
            stop_at = proposal.start + granted
            request = ctx.request(
                "train", proposal.params, stop_at, seed=ctx.spec.seed + trial.number,
                horizon=plan.horizon, resume=proposal.resume, vitals=plan.diagnose,
                checkpoint_at=tuple(e for e in plan.checkpoint_at if proposal.start < e <= stop_at))
            chance = hopeless_bound(ctx) if plan.diagnose and proposal.start == 0 else None
            report = Reporter(ctx, stage, trial, plan.prune, allowance, granted, stop_at,
                              values=list(proposal.replayed), chance=chance)
            yield Job(trial, request, report, TrialCheckpoints(trial) if request.checkpoint_at
                      else None)

    for outcome in ctx.executor.run(jobs()):
        tell(ctx, study, outcome)
        finished += not outcome.cancelled
        ctx.tick(stage, finished, plan.trials)
    return tally(study)


def hopeless_bound(ctx: StageContext) -> float | None:
    """The chance-level bound a fresh trial's first epoch must beat (None: the objective
    has none, or no baseline measured it)."""
    if ctx.handed.get("chance") is None:
        return None
    return chance_bound(ctx.handed, ctx.direction)


@dataclass
class Reporter:
    """A trial's per-epoch callback: charge and record the epoch, report it to Optuna, and
    answer whether to stop (pruned, or its reservation or the stage's seconds spent). A
    database error costs the epoch's record, not the trial: `tell` writes the missed epochs
    from the trial's history once the database answers.

    Diagnosis-based pruning: with `chance` (a fresh trial of a stage that diagnoses), a
    first epoch no better than chance level, whose training loss fell less than 10%, stops
    the trial as hopeless in any rung's place (an accuracy pruner keeps the best of a bad
    lot); the worker itself stops one
    whose vital signs say so within its first epoch (`workers.vitals`)."""

    ctx: StageContext
    stage: str
    trial: optuna.Trial
    prune: bool
    allowance: Allowance | None = None
    granted: float = math.inf
    stop_at: int = 0
    values: list[float] = field(default_factory=list)  # the objective at each epoch
    epochs: int = 0  # charged: every epoch run, repeats after a lost worker included
    missed: bool = False
    cut: bool = False  # stopped because the budget ran out
    chance: float | None = None
    hopeless: str = ""  # why it was stopped as hopeless

    def __call__(self, epoch: int, metrics: dict[str, float]) -> bool:
        self.epochs += 1
        if self.allowance is not None:
            self.allowance.charge_seconds(float(metrics.get("epoch_seconds", 0.0)))
        try:
            self.ctx.store.record_epoch(self.ctx.spec.name, self.stage, self.trial.number,
                                        epoch, metrics)
            value = metrics.get(self.ctx.objective)
            pruned = False
            if value is not None and math.isfinite(value):
                self.values.append(value)
                self.trial.report(value, epoch)
                pruned = self.prune and self.trial.should_prune()
        except Exception as exc:
            if not is_database_error(exc):
                raise
            log.warning("trial %d: epoch %d not recorded yet (%s)", self.trial.number, epoch, exc)
            self.missed, pruned = True, False
        more = epoch < self.stop_at
        if self.chance is not None and len(self.values) == 1 and more and not learning(metrics) \
                and at_chance(self.values[0], self.chance, self.ctx.direction):
            self.hopeless = (f"hopeless: {self.ctx.objective} {self.values[0]:.4g} after its "
                             f"first epoch is no better than chance level (bound "
                             f"{self.chance:.4g}), and its training loss fell under 10%")
            return True
        if pruned and more:  # a prune at its last epoch says only that no rung follows
            return True
        # Epochs run again after a lost worker count too; under an epoch budget they may
        # cut a trial short, since its reservation is all it may ever spend.
        bounded = self.allowance is not None and self.allowance.epochs_left is not None
        spent = (bounded and self.epochs >= self.granted) or (
            self.allowance is not None and self.allowance.out_of_seconds())
        self.cut = more and spent
        return self.cut


def tell(ctx: StageContext, study: optuna.Study, outcome: Outcome) -> None:
    """Record a finished job in Optuna: COMPLETE with its best value, PRUNED, or FAIL;
    give its unused epochs back to the stage."""
    trial: optuna.Trial = outcome.job.key
    result = outcome.result
    report = outcome.job.report
    charged: float = report.epochs if isinstance(report, Reporter) else 0
    if result is not None and result.status == "diverged" and result.epoch:
        charged += 1  # the epoch it diverged in, abandoned before it could report
    if result is not None and result.status == "hopeless":
        charged += result.partial  # stopped within an epoch, on its vital signs
    if isinstance(report, Reporter) and report.allowance is not None:
        report.allowance.settle(report.granted, min(charged, report.granted))
    trial.set_user_attr("epochs", charged)
    if outcome.cancelled:
        trial.set_user_attr("status", "cancelled")
        trial.set_user_attr("message", "stopped because the study was cancelled")
        study.tell(trial, state=TrialState.FAIL)
        return
    if outcome.restarts:
        trial.set_user_attr("restarts", outcome.restarts)
    if result is None:
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("message", outcome.error)
        log.warning("trial %d failed with %s: %s", trial.number, trial.params, outcome.error)
        study.tell(trial, state=TrialState.FAIL)
        return
    if isinstance(report, Reporter) and report.missed:
        ctx.store.record_history(ctx.spec.name, report.stage, trial.number, result.history)
    cut = isinstance(report, Reporter) and report.cut
    if isinstance(report, Reporter) and report.hopeless and result.status == "stopped":
        result.status, result.message = "hopeless", report.hopeless
    trial.set_user_attr("status", "cut_by_budget" if cut else result.status)
    trial.set_user_attr("seconds", round(result.seconds, 3))
    trial.set_user_attr("parameters", getattr(result, "parameters", 0))
    if getattr(result, "start_epoch", 0):  # continued from a checkpoint after this epoch
        trial.set_user_attr("started_after", result.start_epoch)
    if result.worker:
        trial.set_user_attr("worker", result.worker)
    if result.message:
        trial.set_user_attr("message", result.message)
    values = [m[ctx.objective] for m in result.history
              if math.isfinite(m.get(ctx.objective, math.nan))]
    if isinstance(report, Reporter):
        values += report.values  # with what a continued trial brought along
    if result.status in ("stopped", "hopeless") and not cut:
        study.tell(trial, state=TrialState.PRUNED)
    elif result.status == "diverged" or not values:
        log.warning("trial %d %s with %s: %s", trial.number, result.status, trial.params,
                    result.message)
        study.tell(trial, state=TrialState.FAIL)
    else:
        best = max(values) if ctx.direction == "maximize" else min(values)
        study.tell(trial, best)


def tally(study: optuna.Study) -> Tally:
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    return Tally(
        total=len(trials),
        completed=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        diverged=sum(t.user_attrs.get("status") == "diverged" for t in trials),
        epochs=float(sum(t.user_attrs.get("epochs", 0) for t in trials)),
        seconds=float(sum(t.user_attrs.get("seconds", 0.0) for t in trials)),
    )


def top_trials(study: optuna.Study, n: int) -> list[optuna.trial.FrozenTrial]:
    """The `n` best completed trials, best first."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: t.value, reverse=reverse)[:n]  # type: ignore[arg-type, return-value]
