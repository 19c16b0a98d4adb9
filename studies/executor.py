"""How trials get run: the contract the runner drives, and the in-process executor.

The Ray executor (next issue) implements the same contract: take jobs, run them with
their per-epoch report callback, yield each outcome as it finishes.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from workers import StagetuneError, TrialRequest, TrialResult, execute
from workers.train import Report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A request plus what the runner needs back: its key and the per-epoch callback."""

    key: Any
    request: TrialRequest
    report: Report | None = None


@dataclass(frozen=True)
class Outcome:
    """A job's end: a result, or the error that stopped it (never raised to the runner)."""

    job: Job
    result: TrialResult | None
    error: str = ""


class Executor(ABC):
    """Runs jobs, at most `max_concurrent` at once, yielding outcomes as they finish."""

    max_concurrent: int = 1

    @abstractmethod
    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        """Run every job; a failing job yields an Outcome with `error`, never raises."""


class LocalExecutor(Executor):
    """Runs jobs one after another in this process."""

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        for job in jobs:
            try:
                yield Outcome(job, execute(job.request, job.report))
            except StagetuneError as exc:
                yield Outcome(job, None, str(exc))
            except Exception as exc:  # a trial's crash is recorded, never fatal to the study
                log.exception("trial %s crashed: %s", job.key, exc)
                yield Outcome(job, None, f"{exc.__class__.__name__}: {exc}")
