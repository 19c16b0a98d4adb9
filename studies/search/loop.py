"""The ask-run-tell loop shared by the search stages, resumable from the store.

Optuna numbers the trials, so a number is never given twice. Each trial reserves the
epochs it may run from its stage's allowance before it starts (`studies.planning.budget`), and is
charged one epoch per report.

A trial that was running when its runner died (a restart of the service, whose container
is the Ray head) goes on under the next runner, as in Determined: the same Optuna trial,
its values kept, after its last checkpoint in the store, or from its start if it had none
(`interrupted`). What its earlier runs spent is read back from its epoch records and
charged first; an epoch run again is charged again and its record replaced, as after a
lost worker. A cancelled or deleted trial is finished or gone: never continued.

Checkpoints: a trial hands one over after every epoch it runs but a full trial's last
(`checkpoint_epochs`), so a lost worker or runner costs at most the epoch it was in. That
costs the worker one `torch.save` to bytes; the runner keeps the latest in memory for a
retry and writes it to the store as `studies.store.weights.TrialCheckpoints` allows (always at
coarse's rungs, else while writing takes a small share of the trial's time).

A database that is away costs a wait, never a trial: while trials run, the runner's own
writes (ask, propose, tell) are tried again for up to STAGETUNE_DB_RETRY_SECONDS
(`wait_out`), the trials go on meanwhile, and what they reported that could not be
written is written when they are told. Past that the study fails, and the trials it left
running are failed with it (`abandon_running`); a resume runs them again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState, create_trial

from stagetune.studies.planning.budget import Allowance
from stagetune.studies.run.executor import Job, Outcome
from stagetune.studies.search.pareto import POINT, point_of
from stagetune.studies.search.stages._base import StageContext
from stagetune.studies.search.stages._chance import at_chance, known_bound, learning
from stagetune.studies.store import Store, is_database_error, wait_out
from stagetune.studies.store.weights import TrialCheckpoints, load_checkpoint

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
NOT_RUN = "not_run"  # the status of a queued trial closed because its stage ended first
ABANDONED = "abandoned"  # the status of a trial that was running when its study failed


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


@dataclass(frozen=True)
class EarlierRuns:
    """What the runs of an interrupted trial left: the epochs charged (every report,
    repeats included), their trial-seconds, the last epoch reported, how many reports
    were repeats, and its own latest checkpoint in the store (artifact id and epoch)."""

    epochs: int = 0
    seconds: float = 0.0
    last: int = 0
    repeats: int = 0
    checkpoint: dict[str, Any] | None = None


@dataclass
class Proposal:
    """A trial to run: its knob values, the epoch it starts after (a continuation), the
    checkpoint it continues from (an artifact id, `studies.store.weights`), the values it brings
    along by epoch (told to Optuna before it runs), and what its earlier runs spent."""

    trial: optuna.Trial
    params: dict[str, Any]
    start: int = 0
    checkpoint: str | None = None
    replayed: dict[int, float] = field(default_factory=dict)
    earlier: EarlierRuns = field(default_factory=EarlierRuns)


@dataclass
class SearchPlan:
    """How a stage runs its trials: how many, how long, which checkpoints a later stage
    takes up (always written), whether they may be pruned, and when to stop asking."""

    trials: int
    epochs: int  # the last epoch a trial runs
    horizon: int  # the epochs its LR schedule spans
    checkpoint_at: tuple[int, ...] = ()
    prune: bool = False
    diagnose: bool = False  # stop hopeless trials early (see `Reporter`)
    stop: Callable[[], bool] = field(default=lambda: False)
    # why the running trials must stop now ("" while they may go on): a probe beside
    # coarse's early rung failed (`studies.search.stages._early`)
    halt: Callable[[], str] = field(default=lambda: "")
    keep: int = 0  # executor slots left to other work meanwhile
    on_job: Callable[[], None] = field(default=lambda: None)  # called as each job goes out


def checkpoint_epochs(start: int, stop_at: int, last: int, keep: Collection[int] = ()
                      ) -> tuple[int, ...]:
    """The epochs after which a trial running `start + 1 .. stop_at` hands over a
    checkpoint: every one but `last`, the last epoch of a full trial, after which nothing
    goes on, unless a later stage takes it up (`keep`)."""
    return tuple(e for e in range(start + 1, stop_at + 1) if e < last or e in keep)


def interrupted(ctx: StageContext, stage: str, study: optuna.Study,
                propose: Callable[[optuna.Trial], Proposal | None], prune: bool = False
                ) -> list[Proposal]:
    """The trials a dead runner left running, proposed again to go on: `propose` gives back
    what the stage drew for each (its parameters are set, so suggest returns them), then
    each moves on to its own last checkpoint, with what its earlier runs spent."""
    out = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        proposal = propose(optuna.trial.Trial(study, frozen._trial_id))
        if proposal is not None:
            out.append(_pick_up(ctx, stage, study, frozen, proposal, prune))
    return out


def _pick_up(ctx: StageContext, stage: str, study: optuna.Study,
             frozen: optuna.trial.FrozenTrial, proposal: Proposal, prune: bool) -> Proposal:
    own = frozen.user_attrs.get("checkpoint")
    if own is not None and own["epoch"] > proposal.start:
        proposal.start, proposal.checkpoint = int(own["epoch"]), own["artifact_id"]
    told = frozen.intermediate_values
    replay(proposal, prune, told)  # what a death in the middle of proposing left untold
    proposal.replayed = {**proposal.replayed, **{s: v for s, v in told.items()
                                                 if s <= proposal.start and math.isfinite(v)}}
    rows = ctx.store.curves_of(ctx.spec.name, stage, frozen.number)
    repeats = int(frozen.user_attrs.get("repeats", 0))
    proposal.earlier = EarlierRuns(
        epochs=len(rows) + repeats, seconds=sum(float(m.get("epoch_seconds", 0.0)) for m in rows),
        last=max((int(m["epoch"]) for m in rows), default=0), repeats=repeats, checkpoint=own)
    times = int(frozen.user_attrs.get("interrupted", 0)) + 1
    proposal.trial.set_user_attr("interrupted", times)
    log.warning("%s: trial %d was running when its runner stopped; it continues %s "
                "(%d epochs spent before)", study.study_name, frozen.number,
                f"after epoch {proposal.start}, from its checkpoint" if proposal.checkpoint
                else "from its start", proposal.earlier.epochs)
    return proposal


def replay(proposal: Proposal, prune: bool, told: Collection[int] = ()) -> None:
    """Tell Optuna the values a continued trial brings along (a coarse survivor's epochs),
    but those it was `told`; with `prune`, ask the pruner after each so that ASHA records
    the rungs it passed (the answer was given when they ran)."""
    for step, value in sorted(proposal.replayed.items()):
        if step in told:
            continue
        proposal.trial.report(value, step)
        if prune:
            proposal.trial.should_prune()


def close_cut(study: optuna.Study, proposal: Proposal, scored: bool = True) -> None:
    """Tell a trial the budget left no room for: complete with the best value it brings (an
    interrupted search trial's), else failed (`scored` False: a part of a run says
    nothing, as in confirm)."""
    trial, earlier = proposal.trial, proposal.earlier
    try:
        trial.set_user_attr("status", "cut_by_budget")
        if earlier.epochs:
            trial.set_user_attr("epochs", earlier.epochs)
            trial.set_user_attr("seconds", round(earlier.seconds, 3))
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # told by an earlier attempt whose answer the database lost (`wait_out`)
    values = list(proposal.replayed.values()) if scored else []
    if not values:
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        return
    study.tell(trial, max(values) if study.direction == optuna.study.StudyDirection.MAXIMIZE
               else min(values), skip_if_finished=True)


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
    """Finished trials that spend budget: every one but those stopped by a cancel or by
    their study's failure, which a resumed study runs again, those that never ran, and
    coarse's trials told to refine's sampler."""
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED)
            if t.user_attrs.get("status") not in ("cancelled", ABANDONED, NOT_RUN)
            and "from" not in t.user_attrs]


def abandon_running(store: Store, name: str, why: str) -> int:
    """Fail the trials of study `name` still running as it fails (its runner gave it up and
    stopped them): status `abandoned` and `why`, charged the epochs they recorded, so that
    no trial is left running in a failed study; a resume runs them again (`counted`).
    Safe to repeat (`wait_out`); the number failed."""
    failed = 0
    for stage in store.study(name).stages:
        try:
            study = optuna.load_study(study_name=f"{name}:{stage.name}",
                                      storage=store.optuna_storage)
        except KeyError:  # the stage never ran trials
            continue
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            rows = store.curves_of(name, stage.name, frozen.number)
            trial = optuna.trial.Trial(study, frozen._trial_id)
            trial.set_user_attr("status", ABANDONED)
            trial.set_user_attr("message", why)
            trial.set_user_attr("epochs", len(rows) + int(frozen.user_attrs.get("repeats", 0)))
            trial.set_user_attr("seconds", round(sum(float(m.get("epoch_seconds", 0.0))
                                                     for m in rows), 3))
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            failed += 1
    return failed


def run_trials(ctx: StageContext, stage: str, study: optuna.Study, allowance: Allowance,
               plan: SearchPlan, propose: Callable[[optuna.Trial], Proposal | None]) -> Tally:
    """Ask, run and tell until the stage holds `plan.trials` finished trials, its
    allowance is spent, or `plan.stop()` says so. `propose(trial)` draws a trial's
    parameters: a trial just asked, or one a dead runner left running (`interrupted`),
    which runs first, whatever `plan.stop()` says: it was started before."""
    resumed = interrupted(ctx, stage, study, propose, plan.prune)
    for proposal in resumed:  # spent within the dead runner's reservations: it fits
        allowance.charge(proposal.earlier.epochs, proposal.earlier.seconds)
    finished = len(counted(study))
    fresh_ones = plan.trials - finished - len(resumed)
    ctx.tick(stage, finished, plan.trials)

    def jobs() -> Iterator[Job]:  # asked one by one, as slots free up
        for going_on in resumed:
            job = _job(ctx, stage, study, allowance, plan, going_on)
            if job is not None:
                plan.on_job()
                yield job
        for _ in range(fresh_ones):
            left = allowance.epochs_left
            if wait_out(plan.stop) or plan.halt() or allowance.out_of_seconds() \
                    or (left is not None and left < 1):
                return
            # each step on its own: a repeated propose draws the same trial's parameters
            fresh = wait_out(propose, wait_out(study.ask))
            if fresh is None:
                continue  # the stage settled it without running it
            wait_out(replay, fresh, plan.prune)
            job = _job(ctx, stage, study, allowance, plan, fresh)
            if job is None:
                return
            plan.on_job()
            yield job

    for outcome in ctx.executor.run(jobs(), keep=plan.keep):
        tell(ctx, study, outcome)
        finished += not outcome.cancelled
        ctx.tick(stage, finished, plan.trials)
    return tally(study)


def _job(ctx: StageContext, stage: str, study: optuna.Study, allowance: Allowance,
         plan: SearchPlan, proposal: Proposal) -> Job | None:
    """Reserve what a proposal may run and make its job; None when the budget leaves it no
    epoch (the trial is then told, `close_cut`). One that ran every epoch before its
    runner died, untold, runs none: its worker only hands back the result."""
    want = plan.epochs - proposal.start
    granted = int(allowance.reserve(want))
    if granted < min(want, 1):
        wait_out(close_cut, study, proposal)
        return None
    trial, stop_at = proposal.trial, proposal.start + granted
    request = ctx.request(
        "train", proposal.params, stop_at, seed=ctx.spec.seed + trial.number,
        horizon=plan.horizon, resume=resume_of(proposal), vitals=plan.diagnose,
        checkpoint_at=checkpoint_epochs(proposal.start, stop_at, plan.epochs, plan.checkpoint_at))
    chance = hopeless_bound(ctx) if plan.diagnose and proposal.start == 0 else None
    report = Reporter(ctx, stage, trial, plan.prune, allowance,
                      proposal.earlier.epochs + granted, stop_at,
                      values=list(proposal.replayed.values()), chance=chance,
                      earlier=proposal.earlier, short=stop_at < plan.epochs, halt=plan.halt)
    save = TrialCheckpoints(trial, plan.checkpoint_at, proposal.earlier.checkpoint)
    return Job(trial, request, report, save if request.checkpoint_at else None)


def resume_of(proposal: Proposal) -> bytes | None:
    """The bytes of the checkpoint a proposal continues from (None: a fresh start)."""
    return load_checkpoint(proposal.checkpoint) if proposal.checkpoint is not None else None


def hopeless_bound(ctx: StageContext) -> float | None:
    """The chance-level bound a fresh trial's first epoch must beat (None: the objective
    has none, or no baseline measured it)."""
    return known_bound(ctx.handed, ctx.direction)


@dataclass
class Reporter:
    """A trial's per-epoch callback: charge and record the epoch, report it to Optuna, and
    answer whether to stop (pruned, or its reservation or the stage's seconds spent). A
    database error costs the epoch's record, not the trial: `tell` writes the missed epochs
    from the trial's history, and reports their values to Optuna (`untold`), once the
    database answers.

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
    granted: float = math.inf  # all it may spend, its earlier runs' epochs included
    stop_at: int = 0
    values: list[float] = field(default_factory=list)  # the objective at each epoch
    missed: bool = False
    untold: dict[int, float] = field(default_factory=dict)  # values Optuna missed, by epoch
    cut: bool = False  # stopped because the budget ran out
    short: bool = False  # the budget granted it fewer epochs than a full trial has
    chance: float | None = None
    hopeless: str = ""  # why it was stopped as hopeless
    earlier: EarlierRuns = field(default_factory=EarlierRuns)  # an interrupted trial's
    halt: Callable[[], str] = field(default=lambda: "")  # why it must stop now, if it must
    halted: str = ""  # why `halt` stopped it
    # charged: every epoch run, repeats (after a lost worker, or a continuation from an
    # older checkpoint) and its earlier runs' included
    epochs: int = field(init=False)
    last: int = field(init=False)  # the last epoch reported
    repeats: int = field(init=False)  # reports of an epoch reported before

    def __post_init__(self) -> None:
        self.epochs, self.last = self.earlier.epochs, self.earlier.last
        self.repeats = self.earlier.repeats

    def __call__(self, epoch: int, metrics: dict[str, float]) -> bool:
        self.epochs += 1
        repeat = epoch <= self.last
        self.last, self.repeats = max(self.last, epoch), self.repeats + repeat
        if self.allowance is not None:
            self.allowance.charge_seconds(float(metrics.get("epoch_seconds", 0.0)))
        value = metrics.get(self.ctx.objective)
        if value is not None and not math.isfinite(value):
            value = None  # a diverged epoch: no value to keep or report
        if value is not None:
            self.values.append(value)
        told = pruned = False
        try:
            self.ctx.store.record_epoch(self.ctx.spec.name, self.stage, self.trial.number,
                                        epoch, metrics)
            if repeat:  # the records hold each epoch once: a next runner counts these apart
                self.trial.set_user_attr("repeats", self.repeats)
            if value is not None:
                self.trial.report(value, epoch)
                told = True
                pruned = self.prune and self.trial.should_prune()
        except optuna.exceptions.UpdateFinishedTrialError:
            return True  # abandoned while this report waited for the database: stop
        except Exception as exc:
            if not is_database_error(exc):
                raise
            log.warning("trial %d: epoch %d not recorded yet (%s)", self.trial.number, epoch, exc)
            self.missed, pruned = True, False
            if value is not None and not told:
                self.untold[epoch] = value
        more = epoch < self.stop_at
        self.halted = self.halt() if more else ""
        if self.halted:
            return True
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
    give its unused epochs back to the stage. While the database is away, wait for it
    (`wait_out`): the other trials go on meanwhile."""
    result = outcome.result
    report = outcome.job.report
    charged: float = report.epochs if isinstance(report, Reporter) else 0
    if result is not None and result.status == "diverged" and result.epoch:
        charged += 1  # the epoch it diverged in, abandoned before it could report
    if result is not None and result.status == "hopeless":
        charged += result.partial  # stopped within an epoch, on its vital signs
    if isinstance(report, Reporter) and report.allowance is not None:
        report.allowance.settle(report.granted, min(charged, report.granted))
    try:
        wait_out(_told, ctx, study, outcome, charged)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # told by an earlier attempt whose answer the database lost


def _told(ctx: StageContext, study: optuna.Study, outcome: Outcome, charged: float) -> None:
    """What `tell` writes, safe to repeat: every write comes before Optuna's tell."""
    trial: optuna.Trial = outcome.job.key
    result = outcome.result
    report = outcome.job.report
    if isinstance(outcome.job.save, TrialCheckpoints):
        outcome.job.save.flush()
    trial.set_user_attr("epochs", charged)
    halted = report.halted if isinstance(report, Reporter) else ""
    if outcome.cancelled or halted:
        trial.set_user_attr("status", "cancelled")
        trial.set_user_attr("message", halted or "stopped because the study was cancelled")
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        return
    if outcome.restarts:
        trial.set_user_attr("restarts", outcome.restarts)
    if result is None:
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("message", outcome.error)
        log.warning("trial %d failed with %s: %s", trial.number, trial.params, outcome.error)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        return
    if isinstance(report, Reporter) and report.missed:
        ctx.store.record_history(ctx.spec.name, report.stage, trial.number, result.history)
        for step, value in sorted(report.untold.items()):
            trial.report(value, step)
        if report.repeats:
            trial.set_user_attr("repeats", report.repeats)
    # cut: stopped when the budget ran out, or it ran to the end of a shortened grant
    cut = isinstance(report, Reporter) and (
        report.cut or (report.short and result.status == "completed"))
    if isinstance(report, Reporter) and report.hopeless and result.status == "stopped":
        result.status, result.message = "hopeless", report.hopeless
    trial.set_user_attr("status", "cut_by_budget" if cut else result.status)
    earlier = report.earlier if isinstance(report, Reporter) else EarlierRuns()
    trial.set_user_attr("seconds", round(earlier.seconds + result.seconds, 3))
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
    point = point_of(ctx.objectives, result.history, getattr(result, "parameters", 0)) \
        if ctx.objectives else None
    if point is not None:
        trial.set_user_attr(POINT, point)
    if result.status in ("stopped", "hopeless") and not cut:
        study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
    elif result.status == "diverged" or not values:
        log.warning("trial %d %s with %s: %s", trial.number, result.status, trial.params,
                    result.message)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    else:
        best = max(values) if ctx.direction == "maximize" else min(values)
        study.tell(trial, best, skip_if_finished=True)


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


def told_trial(trial: optuna.trial.FrozenTrial, distributions: dict[str, Any], full: int,
               user_attrs: dict[str, Any], system_attrs: dict[str, Any] | None = None
               ) -> optuna.trial.FrozenTrial:
    """An earlier trial as refine's sampler and pruner are told it: complete with its value
    where it ran `full` epochs (a full trial), else pruned, with its curve either way."""
    whole = trial.state == TrialState.COMPLETE and max(trial.intermediate_values) >= full
    return create_trial(
        state=TrialState.COMPLETE if whole else TrialState.PRUNED,
        value=trial.value if whole else None, params=trial.params,
        distributions={n: distributions[n] for n in trial.params},
        intermediate_values=dict(trial.intermediate_values),
        system_attrs=system_attrs or {}, user_attrs=user_attrs)
