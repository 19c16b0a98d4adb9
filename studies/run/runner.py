"""The runner: drives one study through its stages and writes everything to the store.

Run again on the same store, it resumes: finished stages are skipped (what they
handed on is read back), finished trials are kept, and trials left running go on from
their last checkpoint (`studies.search.loop.interrupted`). `studies.run.runner_actor` runs it
inside a Ray actor, trials on Ray tasks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from stagetune.studies.errors import StudyCancelled
from stagetune.studies.planning.plan import make_plan
from stagetune.studies.reporting.edits import useful_fixes
from stagetune.studies.run.executor import Executor, LocalExecutor
from stagetune.studies.search.stages import ORDER, STAGES, StageContext, StageOutcome
from stagetune.studies.search.stages._base import Progress
from stagetune.studies.search.stages._early import BESIDE, EarlyRung, early_count
from stagetune.studies.spec import DIRECTIONS, StudySpec, known_direction
from stagetune.studies.store import Store, StudyRecord, is_database_error
from stagetune.workers import StagetuneError

log = logging.getLogger(__name__)

# A runner may take a study up from any of these (`stagetune run` resumes a cancelled or
# failed one itself); a study being cancelled (`cancelling`) it records cancelled instead.
RUNNABLE = ("pending", "running", "cancelled", "failed")
CANCELLED = "cancelled on request; resume to go on"


@dataclass
class StudyReport:
    """The summary a person reads at the end, and `stagetune run --json` prints."""

    study: str
    status: str  # completed, stopped, cancelled, failed
    message: str
    stages: list[dict[str, Any]]
    best: dict[str, Any] | None
    baseline: float | None
    objective: str
    compute: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] | None = None  # the winner's weights: artifact id, trial, value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def objective_of(spec: StudySpec, executor: Executor | None = None) -> tuple[str, str]:
    """The study's objective and direction: the spec's, else the task's default (the
    trainer's declared objective, the dataset's first metric, or accuracy / RMSE by kind).
    What the spec leaves open is found by `executor`'s trial worker (a runner imports no
    torch and loads no data); a trainer task with no dataset loads none there either."""
    task, objective = spec.task, spec.task.main_objective
    if objective and (task.direction or objective in DIRECTIONS):
        return objective, task.direction or DIRECTIONS[objective]
    return (executor or LocalExecutor()).objective(task.as_task(), objective, task.direction)


def objectives_of(spec: StudySpec, objective: str, direction: str, executor: Executor
                  ) -> tuple[tuple[str, str], ...]:
    """Every objective with its direction where the spec names several (else none): the
    first is the study's objective, a measure's direction is its own (MEASURES), a
    metric's is known here or found by a trial worker, as the objective's is."""
    names = spec.task.objectives
    if not names:
        return ()
    out = [(objective, direction)]
    for name in names[1:]:
        known = known_direction(name)
        out.append((name, known or executor.objective(spec.task.as_task(), name, None)[1]))
    return tuple(out)


class Runner:
    """Drives `spec` through the stages in ORDER on `store`, trials through `executor`."""

    def __init__(self, spec: StudySpec, store: Store, executor: Executor | None = None,
                 progress: Progress | None = None) -> None:
        self.spec, self.store = spec, store
        self.executor = executor or LocalExecutor()
        self.progress = progress
        self._earlier_seconds: dict[str, float] = {}  # an extended stage's, before this run

    def run(self) -> StudyReport:
        """Run or resume the study. Whatever stops it (an error before the first stage
        too: a dataset that cannot load, a plan that cannot be made) is recorded in the
        store with its reason; only a database error is left to the caller to retry."""
        spec, store = self.spec, self.store
        record = store.open_study(spec.name, spec.to_store(), list(ORDER))
        objective: str = spec.task.main_objective or ""
        finished = record.status in ("completed", "stopped")
        try:
            # running once taken up, before the first trial worker (which names the
            # objective) has started: on a busy cluster that can take a while
            if not finished and not store.set_status(spec.name, "running",
                                                     only_from=RUNNABLE):  # cancelling
                raise StudyCancelled()
            objective, direction = objective_of(spec, self.executor)
            if finished:
                return report_of(record, objective)
            ctx = self._context(record, objective, direction)
            early: EarlyRung | None = None
            try:
                for stored in record.stages:
                    if stored.status == "done":
                        continue
                    early = early or self._early_rung(ctx, record, stored.name)
                    if early is not None and stored.name not in BESIDE:
                        self._early_done(early)
                        early = None
                    outcome = self._run_stage(ctx, stored.name)
                    if outcome.verdict == "failed" and STAGES[stored.name].gate \
                            and not spec.stages.continue_on_failure:
                        if early is not None and stored.name in BESIDE:
                            self._early_halted(ctx, early, stored.name)
                        store.set_status(spec.name, "stopped", f"{stored.name}: {outcome.message}")
                        return report_of(store.study(spec.name), objective)
            finally:
                if early is not None:
                    early.close()
        except StudyCancelled:
            store.set_status(spec.name, "cancelled", CANCELLED)
            return report_of(store.study(spec.name), objective)
        except Exception as exc:
            if is_database_error(exc):  # nothing can be written; the runner actor retries
                raise
            reason = str(exc) if isinstance(exc, StagetuneError) \
                else f"internal error: {exc.__class__.__name__}: {exc}"
            store.set_status(spec.name, "failed", reason)
            raise
        store.set_status(spec.name, "completed", "")
        return report_of(store.study(spec.name), objective)

    def _context(self, record: StudyRecord, objective: str, direction: str) -> StageContext:
        """The stages' context, with what the finished stages handed on and spent."""
        ctx = StageContext(self.spec, self.store, self.executor, objective, direction,
                           progress=self.progress, plan=make_plan(self.spec),
                           objectives=objectives_of(self.spec, objective, direction,
                                                    self.executor))
        for stage in record.stages:  # in order
            if stage.status == "done":
                ctx.handed.update(stage.hand_on)
            if stage.status == "done" or stage.epochs:  # an extended stage's earlier spend
                ctx.spent[stage.name] = (stage.epochs, stage.trial_seconds)
                self._earlier_seconds[stage.name] = stage.seconds
        return ctx

    def _early_rung(self, ctx: StageContext, record: StudyRecord, stage: str
                    ) -> EarlyRung | None:
        """Coarse's early rung, started before the first probe it runs beside
        (`studies.search.stages._early`); None where it has none."""
        coarse = next((s for s in record.stages if s.name == "coarse"), None)
        if stage not in BESIDE or coarse is None or coarse.status == "done":
            return None
        count = early_count(ctx)
        if not count:
            return None
        early = EarlyRung(ctx, count)
        early.start()
        return early

    def _early_done(self, early: EarlyRung) -> None:
        """The probes are done: coarse goes on from its early trials, its wall time theirs too."""
        early.finish()
        self._earlier_seconds["coarse"] = self._earlier_seconds.get("coarse", 0.0) + early.seconds
        early.seconds = 0.0

    def _early_halted(self, ctx: StageContext, early: EarlyRung, probe: str) -> None:
        """A probe failed its gate beside the early rung: stop its trials, and record what
        they spent as coarse's, which does not run."""
        spent = early.halt(f"stopped because {probe} failed")
        planned = ctx.plan["coarse"].to_dict()
        self.store.finish_stage(
            self.spec.name, "coarse", "skipped",
            f"Not run: the study stopped when {probe} failed. {spent.total} early "
            f"configurations had started beside the probes ({spent.epochs:g} epochs); those "
            "still running were stopped.", {"trials": spent.total}, {}, spent.epochs,
            early.seconds + self._earlier_seconds.get("coarse", 0.0), spent.seconds, planned)

    def _run_stage(self, ctx: StageContext, name: str) -> StageOutcome:
        config = getattr(self.spec.stages, name)
        started = time.perf_counter()
        planned = ctx.plan[name].to_dict() if name in ctx.plan else None
        if not config.enabled:
            outcome = StageOutcome("skipped", "Disabled in the spec.")
        else:
            self.store.start_stage(self.spec.name, name, planned)
            outcome = STAGES[name](config).run(ctx)
        seconds = time.perf_counter() - started + self._earlier_seconds.get(name, 0.0)
        self.store.finish_stage(self.spec.name, name, outcome.verdict, outcome.message,
                                outcome.figures, outcome.hand_on, outcome.epochs, seconds,
                                outcome.trial_seconds, planned)
        ctx.handed.update(outcome.hand_on)
        ctx.spent[name] = (outcome.epochs, outcome.trial_seconds)
        log.info("%s: %s: %s", name, outcome.verdict, outcome.message)
        return outcome


def report_of(record: StudyRecord, objective: str) -> StudyReport:
    """Build the summary from the store alone (so it is the same after a resume)."""
    handed: dict[str, Any] = {}
    for stage in record.stages:
        handed.update(stage.hand_on)
    status = record.status if record.status in ("completed", "stopped", "cancelled") else "failed"
    best = handed.get("best")
    return StudyReport(
        study=record.name, status=status, message=record.message,
        stages=[{"name": s.name, "verdict": s.verdict, "message": s.message,
                 "planned": s.planned, "spent": {"epochs": s.epochs,
                                                 "trial_seconds": s.trial_seconds},
                 # spec edits as data, as `GET /api/studies/{id}` gives them
                 "fixes": useful_fixes(record, list(s.figures.get("fixes") or []))}
                for s in record.stages],
        best={"params": best["params"], "value": best["value"]} if best else None,
        baseline=handed.get("baseline"), objective=objective,
        compute={"epochs": round(sum(s.epochs for s in record.stages), 3),
                 "seconds": round(sum(s.seconds for s in record.stages), 3),
                 "trial_seconds": round(sum(s.trial_seconds for s in record.stages), 3),
                 "budget": record.spec.get("budget")},
        weights=handed.get("weights"),
    )
