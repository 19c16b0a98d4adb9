"""Trials as Ray tasks, driven from the runner actor.

Each task runs `workers.execute` on the device Ray assigned and, after every epoch,
calls its runner's `report` method over the wire; the answer says whether to stop.
Retries of trials lost with their worker or node are Ray's own (`max_retries`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError, TaskCancelledError

from studies.errors import StudyCancelled
from studies.executor import Executor, Job, Outcome
from studies.spec import Resources
from workers import StagetuneError, TrialRequest, TrialResult, execute
from workers.data import dataset_loaded
from workers.plugins import load_plugins

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # how often a waiting executor looks at the cancel flag
CANCEL_GRACE_SECONDS = 5.0  # after this, a trial that ignored the interrupt is killed


# max_calls=0: a worker process is reused by later trials, so the data it loaded stays in
# memory (Ray would otherwise retire a worker after each GPU task).
@ray.remote(max_calls=0, retry_exceptions=False)
def run_trial(request: TrialRequest, token: str, runner: Any, reports: bool) -> TrialResult:
    """Run one request on this worker. `runner` (the actor, or None) hears where each
    attempt starts and, when `reports` is set, each epoch's metrics."""
    load_plugins()
    device = request.device or ("cuda" if ray.get_gpu_ids() else "cpu")
    where = {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
             "device": device, "data_cached": dataset_loaded(request.task.dataset,
                                                             request.task.dataset_options)}
    if runner is not None:
        # A retry after the worker was lost gets the last checkpoint its attempts handed over.
        latest = ray.get(runner.started.remote(token, where))
        if latest is not None:
            request = replace(request, resume=latest)

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        try:
            return bool(ray.get(runner.report.remote(token, epoch, metrics)))
        except RayActorError:  # the runner died: stop; a new runner re-runs what is missing
            return True

    def save(epoch: int, checkpoint: bytes) -> None:
        try:
            ray.get(runner.checkpoint.remote(token, epoch, checkpoint))
        except RayActorError:
            pass  # the runner died: report() stops the trial next

    started = time.time()
    result = execute(replace(request, device=device),
                     report if runner is not None and reports else None,
                     save if runner is not None and request.checkpoint_at else None)
    result.worker = {**where, "started_at": started, "finished_at": time.time()}
    return result


class RayExecutor(Executor):
    """Runs jobs as Ray tasks with the spec's resources, at most `max_concurrent` at once.
    `deliver` is how reports reach a job's callback; `cancel` stops everything running."""

    def __init__(self, resources: Resources, runner: Any = None) -> None:
        self.max_concurrent = resources.max_concurrent
        self.retries = resources.max_retries
        self._options: dict[str, Any] = {"num_cpus": resources.cpus_per_trial,
                                         "num_gpus": resources.gpus_per_trial,
                                         "max_retries": resources.max_retries}
        if resources.custom:  # e.g. only the nodes that offer a GPU type run trials
            self._options["resources"] = dict(resources.custom)
        self._runner = runner
        self._jobs: dict[str, Job] = {}  # token -> running job
        self._where: dict[str, dict[str, Any]] = {}  # token -> where its attempt runs
        self._restarts: dict[str, int] = {}
        self._checkpoints: dict[str, bytes] = {}  # token -> the job's latest checkpoint
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self.peak_running = 0

    # -- called from other threads of the runner actor --------------------------------

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def started(self, token: str, where: dict[str, Any]) -> bytes | None:
        """An attempt of a job began on a worker; a second attempt is a retry, and gets
        the last checkpoint the job handed over (None: start from the request)."""
        with self._lock:
            if token not in self._jobs:
                return None
            if token in self._where:
                self._restarts[token] = self._restarts.get(token, 0) + 1
                log.warning("trial %s restarted on %s after its worker was lost%s",
                            _label(self._jobs[token]), where["node"],
                            "; it continues from its last checkpoint"
                            if token in self._checkpoints else "")
            self._where[token] = where
            return self._checkpoints.get(token)

    def save(self, token: str, epoch: int, checkpoint: bytes) -> None:
        """Keep a job's latest checkpoint for a retry, and hand it to the job's `save`."""
        with self._lock:
            job = self._jobs.get(token)
            if job is None:
                return
            self._checkpoints[token] = checkpoint
        if job.save is not None:
            job.save(epoch, checkpoint)

    def deliver(self, token: str, epoch: int, metrics: dict[str, float]) -> bool:
        """Hand one epoch to its job's callback; True tells the trial to stop."""
        with self._lock:
            job = self._jobs.get(token)
        if job is None or self.cancelled:
            return True
        return bool(job.report(epoch, metrics)) if job.report is not None else False

    def running(self) -> list[dict[str, Any]]:
        """The jobs running now: their label, where they run, and how often they restarted."""
        with self._lock:
            return [{"job": _label(self._jobs[t]), "restarts": self._restarts.get(t, 0),
                     **self._where.get(t, {})} for t in self._jobs]

    # -- the executor contract --------------------------------------------------------

    def run(self, jobs: Iterable[Job]) -> Iterator[Outcome]:
        if self.cancelled:
            raise StudyCancelled()
        waiting = iter(jobs)
        running: dict[ray.ObjectRef, str] = {}
        try:
            while True:
                while len(running) < self.max_concurrent and not self.cancelled:
                    job = next(waiting, None)
                    if job is None:
                        break
                    token = uuid.uuid4().hex
                    running[self._submit(job, token)] = token
                self.peak_running = max(self.peak_running, len(running))
                if self.cancelled:
                    yield from self._stop(running)
                    raise StudyCancelled()
                if not running:
                    return
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
                for ref in ready:
                    yield self._finish(ref, running.pop(ref))
        finally:  # the runner stopped early (a database error): leave no trial running
            for ref in running:
                ray.cancel(ref, force=False)

    def _submit(self, job: Job, token: str) -> ray.ObjectRef:
        with self._lock:
            self._jobs[token] = job
        return run_trial.options(**self._options).remote(  # type: ignore[no-any-return]
            job.request, token, self._runner, job.report is not None)

    def _finish(self, ref: ray.ObjectRef, token: str) -> Outcome:
        with self._lock:
            job = self._jobs.pop(token)
            self._where.pop(token, None)
            self._checkpoints.pop(token, None)
            restarts = self._restarts.pop(token, 0)
        try:
            result: TrialResult = ray.get(ref)
        except TaskCancelledError:
            return Outcome(job, None, "cancelled", cancelled=True)
        except RayTaskError as exc:  # the trial itself raised
            cause = exc.cause
            message = str(cause) if isinstance(cause, StagetuneError) \
                else f"{cause.__class__.__name__}: {cause}"
            return Outcome(job, None, message, restarts=restarts)
        except RayError as exc:  # its worker or node was lost more often than retries allow
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return Outcome(job, None, f"its worker was lost ({exc.__class__.__name__}) and "
                           f"{self.retries} retries did not finish it. {reason}".strip(),
                           restarts=restarts)
        if result.status == "stopped" and self.cancelled:  # it heard of the cancel first
            return Outcome(job, None, "cancelled", cancelled=True, restarts=restarts)
        return Outcome(job, result, restarts=restarts)

    def _stop(self, running: dict[ray.ObjectRef, str]) -> Iterator[Outcome]:
        """Interrupt every running trial, kill those that ignore it, yield them cancelled."""
        for ref in running:
            ray.cancel(ref, force=False)
        _, stubborn = ray.wait(list(running), num_returns=len(running),
                               timeout=CANCEL_GRACE_SECONDS)
        for ref in stubborn:
            ray.cancel(ref, force=True)
        while running:
            ref, token = running.popitem()
            outcome = self._finish(ref, token)
            yield outcome if outcome.result is not None else replace(
                outcome, error="cancelled", cancelled=True)


def _label(job: Job) -> Any:
    """A job's key as plain data: a trial's number, a probe's stage name."""
    return getattr(job.key, "number", job.key)
