"""How trials get run: the contract the runner drives, and the in-process executor.

An executor pulls jobs from an iterable only when it has a free slot, so the search
asks Optuna for a trial just before it can run (the sampler sees every finished trial).
`studies.run.ray_executor.RayExecutor` is the one studies run on; `LocalExecutor` runs
jobs in this process, for tests of the stages and for debugging.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stagetune.workers import StagetuneError, Task, TrialRequest, TrialResult

if TYPE_CHECKING:
    from stagetune.workers.train import Report

Save = Callable[[int, bytes], None]
"""save(epoch, checkpoint): called when a trial hands over a checkpoint."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A request plus what the runner needs back: its key, the per-epoch callback and
    where checkpoints go."""

    key: Any
    request: TrialRequest
    report: Report | None = None
    save: Save | None = None


@dataclass(frozen=True)
class Outcome:
    """A job's end: a result, or the error that stopped it (never raised to the runner).
    `cancelled` marks a job stopped because its study was cancelled; `restarts` counts
    the times it started again after its worker was lost."""

    job: Job
    result: TrialResult | None
    error: str = ""
    cancelled: bool = False
    restarts: int = 0


class Executor(ABC):
    """Runs jobs, at most `max_concurrent` at once, yielding outcomes as they finish."""

    max_concurrent: int = 1

    @abstractmethod
    def run(self, jobs: Iterable[Job], keep: int = 0) -> Iterator[Outcome]:
        """Run every job, taking the next one only when a slot is free, leaving `keep`
        slots to other work (the probes beside coarse's early rung). A failing job
        yields an Outcome with `error`, never raises; a cancelled study yields its
        running jobs as cancelled outcomes, then raises StudyCancelled."""

    def room(self) -> int:
        """How many jobs this executor can run at once now."""
        return self.max_concurrent

    def objective(self, task: Task, objective: str | None = None,
                  direction: str | None = None) -> tuple[str, str]:
        """The task's objective and direction (`objective`, `direction` where given), found
        where trials run: it may need the trainer's declaration or the dataset's kind."""
        from stagetune.workers.objective import objective_for  # torch: only where trials run

        return objective_for(task, objective, direction)


class LocalExecutor(Executor):
    """Runs jobs one after another in this process."""

    def run(self, jobs: Iterable[Job], keep: int = 0) -> Iterator[Outcome]:
        from stagetune.workers import execute  # torch: loaded only where trials run in this process

        for job in jobs:
            try:
                yield Outcome(job, execute(job.request, job.report, job.save))
            except StagetuneError as exc:
                yield Outcome(job, None, str(exc))
            except Exception as exc:  # a trial's crash is recorded, never fatal to the study
                log.exception("trial %s crashed: %s", job.key, exc)
                yield Outcome(job, None, f"{exc.__class__.__name__}: {exc}")
