"""The ask-run-tell loop shared by the search stages, resumable from the store.

Optuna numbers the trials, so a number is never given twice; a trial that was
running when a runner died is told FAIL on resume and its budget slot is spent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from studies.executor import Job, Outcome
from studies.space import to_distributions
from studies.spec import Param
from studies.stages._base import StageContext
from studies.store import is_database_error

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class Tally:
    """What a search stage did, from the Optuna study (so it counts resumed work too)."""

    total: int
    completed: int
    pruned: int
    failed: int
    diverged: int
    epochs: float


def fail_orphans(study: optuna.Study) -> int:
    """Mark trials left running by a dead runner as failed; they are not re-run."""
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in orphans:
        study.tell(trial.number, state=TrialState.FAIL)
        log.warning("%s: trial %d was running when its runner stopped; marked failed",
                    study.study_name, trial.number)
    return len(orphans)


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Finished trials that spend budget: every one but those stopped by a cancel,
    which a resumed study runs again."""
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED)
            if t.user_attrs.get("status") != "cancelled"]


def run_trials(ctx: StageContext, stage: str, study: optuna.Study, space: Mapping[str, Param],
               n_trials: int, epochs: int, prune: bool) -> Tally:
    """Ask, run and tell until the study holds `n_trials` finished trials."""
    fail_orphans(study)
    distributions = to_distributions(space)
    finished = len(counted(study))
    ctx.tick(stage, finished, n_trials)

    def jobs() -> Iterator[Job]:  # asked one by one, as slots free up
        for _ in range(n_trials - finished):
            trial = study.ask(distributions)
            request = ctx.request("train", trial.params, epochs, seed=ctx.spec.seed + trial.number)
            yield Job(trial, request, reporter(ctx, stage, trial, prune))

    for outcome in ctx.executor.run(jobs()):
        tell(ctx, study, outcome)
        finished += not outcome.cancelled
        ctx.tick(stage, finished, n_trials)
    return tally(study)


@dataclass
class Reporter:
    """A trial's per-epoch callback: record the epoch, report it to Optuna, and answer
    whether to prune. A database error costs the epoch's record, not the trial: `tell`
    writes the missed epochs from the trial's history once the database answers."""

    ctx: StageContext
    stage: str
    trial: optuna.Trial
    prune: bool
    missed: bool = False

    def __call__(self, epoch: int, metrics: dict[str, float]) -> bool:
        try:
            self.ctx.store.record_epoch(self.ctx.spec.name, self.stage, self.trial.number,
                                        epoch, metrics)
            value = metrics.get(self.ctx.objective)
            if value is None or not math.isfinite(value):
                return False
            self.trial.report(value, epoch)
            return self.prune and self.trial.should_prune()
        except Exception as exc:
            if not is_database_error(exc):
                raise
            log.warning("trial %d: epoch %d not recorded yet (%s)", self.trial.number, epoch, exc)
            self.missed = True
            return False


def reporter(ctx: StageContext, stage: str, trial: optuna.Trial, prune: bool) -> Reporter:
    return Reporter(ctx, stage, trial, prune)


def tell(ctx: StageContext, study: optuna.Study, outcome: Outcome) -> None:
    """Record a finished job in Optuna: COMPLETE with its best value, PRUNED, or FAIL."""
    trial: optuna.Trial = outcome.job.key
    result = outcome.result
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
    report = outcome.job.report
    if isinstance(report, Reporter) and report.missed:
        ctx.store.record_history(ctx.spec.name, report.stage, trial.number, result.history)
    trial.set_user_attr("status", result.status)
    if result.worker:
        trial.set_user_attr("worker", result.worker)
    # A diverged run is charged the epoch it diverged in, which has no history entry.
    diverged_in = result.epoch if result.status == "diverged" and result.epoch else 0
    trial.set_user_attr("epochs", max(len(result.history), diverged_in))
    if result.message:
        trial.set_user_attr("message", result.message)
    values = [m[ctx.objective] for m in result.history
              if math.isfinite(m.get(ctx.objective, math.nan))]
    if result.status == "stopped":
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
    )


def top_trials(study: optuna.Study, n: int) -> list[optuna.trial.FrozenTrial]:
    """The `n` best completed trials, best first."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: t.value, reverse=reverse)[:n]  # type: ignore[arg-type, return-value]
