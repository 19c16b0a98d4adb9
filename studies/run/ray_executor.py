"""Trials as Ray tasks, driven from the runner actor.

Each task runs `workers.execute` on the device Ray assigned and, after every epoch,
calls its runner's `report` method over the wire; the answer says whether to stop.
Retries of trials lost with their worker or node are Ray's own (`max_retries`).

Every study's trials are submitted by one named, detached actor, the cluster's `TrialPool`,
not by the study's runner: Ray runs the tasks of a detached actor's tree only in worker
processes of that tree, so trials submitted by each runner (a detached actor) could never
run in a warm worker of another study.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError, TaskCancelledError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from stagetune.studies.errors import StudyCancelled
from stagetune.studies.planning.capacity import node_resources, unmet
from stagetune.studies.run.cluster import NAMESPACE, head_node_id
from stagetune.studies.run.executor import Executor, Job, Outcome
from stagetune.studies.run.ray_faults import memory_sentence, out_of_memory
from stagetune.studies.spec import Resources
from stagetune.studies.store.weights import as_saved
from stagetune.workers import StagetuneError, Task, TrialRequest, TrialResult
from stagetune.workers.plugins import load_plugins

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # how often a waiting executor looks at the cancel flag
CANCEL_GRACE_SECONDS = 5.0  # after this, a trial that ignored the interrupt is killed
ROOM_POLL_SECONDS = 5.0  # how often a study waiting for a node big enough looks again
# A trial interrupted by a cancel its own study never sent starts again, this often at most.
STRAY_RETRIES = 1
STRAY_CANCEL = ("interrupted by a cancel its study did not send (a cancel meant for another "
                "trial that ran in the same worker process)")


# A trial's calls to its runner wait on this thread. Ray releases a task's CPU while its
# main thread blocks in ray.get, and hands the CPU to the next queued trial, on a new
# worker process: every epoch's report would oversubscribe the CPUs and start workers.
_CALLS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runner-calls")


def _answer(ref: ray.ObjectRef) -> Any:
    """ray.get of a runner's answer (milliseconds away), keeping this task's CPU."""
    return _CALLS.submit(ray.get, ref).result()


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold a cancel's KeyboardInterrupt until the block has run. Ray raises it through
    the SIGINT handler (`_thread.interrupt_main`); one that lands in the middle of
    `import torch` leaves torch half-imported in this worker process, and every later
    task the reused worker runs fails to import it ("Trying to override a python impl
    for DispatchKey.Meta ...")."""
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


# max_calls=0: a worker process is reused by later trials, so the data it loaded stays in
# memory (Ray would otherwise retire a worker after each GPU task).
@ray.remote(max_calls=0, retry_exceptions=False)
def run_trial(request: TrialRequest, token: str, runner: Any, reports: bool) -> TrialResult:
    """Run one request on this worker. `runner` (the actor, or None) hears where each
    attempt starts and, when `reports` is set, each epoch's metrics."""
    where: dict[str, Any] = {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
    # First, before the imports and the data: a worker that dies in them (for memory, say)
    # has still started an attempt, and its retry counts as a restart.
    latest = _answer(runner.started.remote(token, where)) if runner is not None else None
    with _interrupts_held():  # torch: here, so the runner that submits this imports none
        from stagetune.workers.runtime import trial_device
    # GPUs that torch cannot use fail the trial here, with why, before it loads the rest:
    # it never trains on the CPU while it holds a GPU
    device = trial_device(request.device, ray.get_gpu_ids(), _host())
    with _interrupts_held():
        from stagetune.workers import execute
        from stagetune.workers.data import dataset_loaded

    load_plugins()
    task = request.task
    cached = task.dataset is not None and dataset_loaded(task.dataset, task.dataset_options)
    where |= {"device": device, "data_cached": cached}
    if latest is not None:  # a retry after the worker was lost: its last checkpoint
        request = replace(request, resume=latest)

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        try:
            return bool(_answer(runner.report.remote(token, epoch, metrics)))
        except RayActorError:  # the runner died: stop; a new runner re-runs what is missing
            return True

    def save(epoch: int, checkpoint: bytes) -> None:
        try:
            _answer(runner.checkpoint.remote(token, epoch, checkpoint))
        except RayActorError:
            pass  # the runner died: report() stops the trial next

    started = time.time()
    result = execute(replace(request, device=device),
                     report if runner is not None and reports else None,
                     save if runner is not None and request.checkpoint_at else None)
    result.worker = {**where, "started_at": started, "finished_at": time.time()}
    if result.state_dict is not None:
        result.state_dict = as_saved(result.state_dict)
    return result


def _host() -> str:
    """This worker's machine, as a person finds it: its name and its Ray node's address."""
    return f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"


@ray.remote(max_calls=0, retry_exceptions=False)
def objective_of_task(task: Task, objective: str | None, direction: str | None
                      ) -> tuple[str, str]:
    """A task's objective and direction, found where trials run: a dataset loaded for its
    kind stays cached for them; a trainer task with no dataset loads none."""
    with _interrupts_held():  # what objective_for imports on first use: torch among it
        import stagetune.workers.losses
        import stagetune.workers.metrics  # noqa: F401
        from stagetune.workers.data import load_dataset  # noqa: F401
        from stagetune.workers.objective import objective_for

    load_plugins()
    return objective_for(task, objective, direction)


@ray.remote(num_cpus=0, max_concurrency=10_000, max_restarts=-1)  # type: ignore[call-overload]
class TrialPool:
    """Submits the trials of every study on the cluster, so that they share one pool of
    warm worker processes (see the module's docstring); a trial's result comes back
    through it. Cancelling a call interrupts its trial, and kills it after a grace."""

    async def run(self, options: dict[str, Any], request: TrialRequest, token: str,
                  runner: Any, reports: bool) -> TrialResult:
        return await _owned(run_trial.options(**options).remote(request, token, runner, reports))

    async def objective(self, options: dict[str, Any], task: Task, objective: str | None,
                        direction: str | None) -> tuple[str, str]:
        return await _owned(objective_of_task.options(**options).remote(task, objective,
                                                                        direction))


async def _owned(ref: ray.ObjectRef) -> Any:
    try:
        return await ref
    except asyncio.CancelledError:  # its study was cancelled: interrupt, then kill
        ray.cancel(ref, force=False)
        _, stubborn = await asyncio.wait([asyncio.wrap_future(ref.future())],
                                         timeout=CANCEL_GRACE_SECONDS)
        if stubborn:
            ray.cancel(ref, force=True)
        raise


def trial_pool() -> Any:
    """The cluster's trial pool, created if none is alive. It lives on the head node, beside
    the runners."""
    return TrialPool.options(  # type: ignore[attr-defined]
        name="trial-pool", namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(head_node_id(), soft=False),
    ).remote()


class RayExecutor(Executor):
    """Runs jobs as Ray tasks with the spec's resources, at most `max_concurrent` at once,
    and never more than the cluster can run at once (`slots`): each study queues only
    trials that could start now, so the trials of concurrent studies take turns in Ray's
    queue. `deliver` is how reports reach a job's callback; `cancel` stops everything."""

    def __init__(self, resources: Resources, runner: Any = None,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.max_concurrent = resources.max_concurrent
        self.resources = resources
        self.retries = resources.max_retries
        self._options: dict[str, Any] = {"num_cpus": resources.cpus_per_trial,
                                         "num_gpus": resources.gpus_per_trial,
                                         "max_retries": resources.max_retries}
        if resources.custom:  # e.g. only the nodes that offer a GPU type run trials
            self._options["resources"] = dict(resources.custom)
        self._runner = runner
        self._on_wait = on_wait  # told why trials wait for a node ("" once they need not)
        self._pool = trial_pool()
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

    def slots(self) -> int:
        """How many of this executor's trials the cluster can run at once (at least 1)."""
        total = ray.cluster_resources()
        wanted = {"CPU": self.resources.cpus_per_trial, "GPU": self.resources.gpus_per_trial,
                  **self.resources.custom}
        fits = [int(total.get(name, 0.0) / amount + 1e-9)
                for name, amount in wanted.items() if amount > 0]
        return max(1, min(fits, default=self.max_concurrent))

    def wait_for_room(self) -> None:
        """Return once some node of the cluster can hold one trial; until then, say why
        through `on_wait` ("waiting: needs 256 CPUs per trial; the largest node has 2"),
        as on a cluster that may grow (STAGETUNE_CLUSTER_MAY_GROW) or that lost nodes.
        Ray would queue the trials silently, forever if no node comes."""
        said = ""
        while (short := unmet(self.resources, node_resources())) is not None:
            if not said:
                said = f"waiting: {short[1]}"
                log.warning("%s", said)
                if self._on_wait is not None:
                    self._on_wait(said)
            if self._cancelled.wait(ROOM_POLL_SECONDS):
                raise StudyCancelled()
        if said and self._on_wait is not None:
            self._on_wait("")

    # -- the executor contract --------------------------------------------------------

    def objective(self, task: Task, objective: str | None = None,
                  direction: str | None = None) -> tuple[str, str]:
        # A trial's resources: it runs in a worker that later trials reuse, data loaded
        # (with no CPU, it would start a worker process beside the busy ones).
        self.wait_for_room()
        try:
            metric, way = ray.get(self._pool.objective.remote(self._options, task, objective,
                                                              direction))
        except RayTaskError as exc:  # raise the dataset's own error, not Ray's wrapping
            cause: BaseException = exc
            while isinstance(cause, RayTaskError) and cause.cause is not None:
                cause = cause.cause  # the pool's error wraps the task's
            raise cause from None
        return str(metric), str(way)

    def room(self) -> int:
        return min(self.max_concurrent, self.slots())

    def run(self, jobs: Iterable[Job], keep: int = 0) -> Iterator[Outcome]:
        if self.cancelled:
            raise StudyCancelled()
        self.wait_for_room()
        waiting = iter(jobs)
        running: dict[ray.ObjectRef, str] = {}
        # More would only queue: trials asked for before the sampler saw the ones ahead of
        # them, holding places in Ray's queue ahead of other studies' trials.
        limit = max(self.room() - keep, 1)
        try:
            while True:
                while len(running) < limit and not self.cancelled:
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
                    token = running.pop(ref)
                    outcome = self._finish(ref, token)
                    if outcome.error == STRAY_CANCEL and outcome.restarts < STRAY_RETRIES:
                        running[self._submit(outcome.job, token, outcome.restarts + 1)] = token
                        continue
                    yield outcome
        finally:  # the runner stopped early (a database error): leave no trial running,
            # and forget its jobs, so that a trial still reporting is told to stop
            for ref, token in running.items():
                ray.cancel(ref, force=False)
                self._forget(token)

    def _submit(self, job: Job, token: str, restarts: int = 0) -> ray.ObjectRef:
        with self._lock:
            self._jobs[token] = job
            if restarts:
                self._restarts[token] = restarts
        return self._pool.run.remote(  # type: ignore[no-any-return]
            self._options, job.request, token, self._runner, job.report is not None)

    def _forget(self, token: str) -> tuple[Job | None, int]:
        """Drop a job's bookkeeping; its job and how often it restarted."""
        with self._lock:
            self._where.pop(token, None)
            self._checkpoints.pop(token, None)
            return self._jobs.pop(token, None), self._restarts.pop(token, 0)

    def _finish(self, ref: ray.ObjectRef, token: str) -> Outcome:
        job, restarts = self._forget(token)
        assert job is not None  # only a running job finishes
        try:
            result: TrialResult = ray.get(ref)
        except TaskCancelledError:
            if self.cancelled:
                return Outcome(job, None, "cancelled", cancelled=True)
            # an interrupt this study never sent: Ray delivers a cancel as SIGINT to the
            # worker process, and one meant for another study's trial can land in the
            # task that reused the worker (ray-project/ray#24359, #63663); run it again
            log.warning("trial %s was interrupted by a cancel its study did not send; it "
                        "starts again", _label(job))
            return Outcome(job, None, STRAY_CANCEL, restarts=restarts)
        except RayError as exc:
            cause = exc.cause if isinstance(exc, RayTaskError) else exc
            if not isinstance(cause, RayError):  # the trial itself raised
                message = str(cause) if isinstance(cause, StagetuneError) \
                    else f"{cause.__class__.__name__}: {cause}"
                return Outcome(job, None, message, restarts=restarts)
            if out_of_memory(cause):  # Ray's memory monitor killed it (and its retries)
                return Outcome(job, None, memory_sentence("its worker"), restarts=restarts)
            # its worker or node was lost more often than retries allow (or the pool was)
            exc = cause
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return Outcome(job, None, f"its worker was lost ({exc.__class__.__name__}) and "
                           f"{self.retries} retries did not finish it. {reason}".strip(),
                           restarts=restarts)
        if result.status == "stopped" and self.cancelled:  # it heard of the cancel first
            return Outcome(job, None, "cancelled", cancelled=True, restarts=restarts)
        return Outcome(job, result, restarts=restarts)

    def _stop(self, running: dict[ray.ObjectRef, str]) -> Iterator[Outcome]:
        """Interrupt every running trial (the pool kills those that ignore it), yield them
        cancelled."""
        for ref in running:
            ray.cancel(ref, force=False)
        while running:
            ref, token = running.popitem()
            outcome = self._finish(ref, token)
            yield outcome if outcome.result is not None else replace(
                outcome, error="cancelled", cancelled=True)


def _label(job: Job) -> Any:
    """A job's key as plain data: a trial's number, a probe's stage name."""
    return getattr(job.key, "number", job.key)
