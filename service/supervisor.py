"""Acts on what the store says each study should be doing.

Every few seconds, and at once when the API writes (`kick`), it reads the store:

- a study that is running without a live runner (its runner died, or the service
  restarted) gets one; so does a pending one (just submitted or resumed) once the limit on
  running studies lets it through (service/admission.py): the others wait in the order
  they were queued, with no process, and their message says where they are. Runners start
  concurrently: a tick asks each to start and hears back on a later tick, never waiting
  for a runner's process to come up;
- a study that is cancelling has its runner stop it (the runner records it cancelled);
  with no runner working on it, it is recorded cancelled here;
- a runner whose study ended or was deleted is stopped once its thread has ended (it may
  still be handing the study to the end-of-study hooks), whoever started it (runners are
  detached and found by name, so a restarted service stops its predecessor's too),
  freeing its process; the store keeps everything it did. A study cancelled with no
  runner on it has its hooks asked for here.

One study's trouble (deleted meanwhile, a runner that will not start) never stops a tick
for the others. One service per store: two services on two Ray clusters would each start
a runner for the same study.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import ray

from stagetune.service.admission import admit, default_limit
from stagetune.studies.cluster import head_node_id
from stagetune.studies.errors import StudyNotFoundError
from stagetune.studies.runner import CANCELLED
from stagetune.studies.runner_actor import find_runner, launch_runner, runner_studies, stop_runner
from stagetune.studies.store import Queued, Store, is_database_error, note_pending, queued_studies
from stagetune.studies.study_end import WAIT_SECONDS as HOOKS_WAIT_SECONDS
from stagetune.studies.study_end import study_ended_elsewhere

log = logging.getLogger(__name__)

ACTIVE = ("pending", "running")  # studies that need a runner working on them
KEEP = (*ACTIVE, "cancelling")  # studies whose runner still has work to do
START_ATTEMPTS = 3  # a runner that dies this often before starting its study fails it
STARTING = "starting"  # a queued study's message once its runner is asked to start


class Supervisor:
    def __init__(self, store: Store, interval: float = 2.0, max_running: int | None = None
                 ) -> None:
        """`max_running`: studies whose runners run at once; None: what the cluster can
        serve, looked at on every tick (a cluster grows and shrinks)."""
        self.store, self.interval, self.max_running = store, interval, max_running
        self._actors: dict[str, Any] = {}  # study -> its runner, as far as we know
        self._starting: dict[str, ray.ObjectRef] = {}  # study -> a start not answered yet
        self._cancels: dict[str, ray.ObjectRef] = {}  # study -> a cancel not answered yet
        self._stopping: dict[str, ray.ObjectRef] = {}  # study -> its ended runner's wait
        self._failures: dict[str, int] = {}  # study -> starts in a row its runner died in
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def kick(self) -> None:
        """Look now rather than at the next tick (a study was submitted, cancelled,
        resumed or deleted)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reconcile()
            except Exception as exc:  # a database or Ray hiccup: try again next tick
                if is_database_error(exc):  # an outage: one line a tick, not a traceback
                    log.warning("supervisor: the database is away (%s); retrying",
                                exc.__class__.__name__)
                else:
                    log.exception("supervisor: reconcile failed; retrying")
            self._wake.wait(self.interval)
            self._wake.clear()

    def _reconcile(self) -> None:
        self._collect()
        queue = queued_studies(self.store.url)
        wanted = dict.fromkeys((q.name for q in queue), "pending")  # study -> its status
        for status in ("running", "cancelling"):
            records, _ = self.store.list_studies(status=status, limit=10_000)
            wanted.update((r.name, r.status) for r in records)
        runners = set(runner_studies(self.store.url)) | set(self._actors)
        admitted = self._admit(queue, runners, busy=runners | {n for n, s in wanted.items()
                                                               if s != "pending"})
        for name, status in wanted.items():
            if self._stop.is_set():
                return
            if status == "cancelling":
                self._guarded(name, self._cancel, name)
            elif status == "running" or name in admitted:
                self._guarded(name, self._start, name)
        for name in runners - set(wanted):
            self._guarded(name, self._stop_if_done, name)

    def _admit(self, queue: list[Queued], runners: set[str], busy: set[str]) -> set[str]:
        """The pending studies that get a runner: those that have one (it is starting), and
        those the limit lets through now, first queued first (`busy`: the studies holding a
        runner). The others are told why they wait and where they are in the queue."""
        limit = self.max_running or default_limit(*_capacity())
        admission = admit([q.name for q in queue if q.name not in runners], len(busy), limit)
        notes = dict(admission.waiting)
        notes.update((q.name, STARTING) for q in queue
                     if q.name in admission.start and q.message.startswith("queued:"))
        said = {q.name: q.message for q in queue}
        note_pending(self.store.url, {n: m for n, m in notes.items() if m != said[n]})
        return (runners & set(said)) | set(admission.start)

    def _collect(self) -> None:
        """Hear from the starts and cancels sent on earlier ticks that have answered."""
        for calls, answered in ((self._starting, self._started),
                                (self._cancels, self._cancelled),
                                (self._stopping, self._runner_done)):
            if not calls:
                continue
            ready, _ = ray.wait(list(calls.values()), num_returns=len(calls), timeout=0)
            for name, ref in list(calls.items()):
                if ref in ready:
                    del calls[name]
                    self._guarded(name, answered, name, ref)

    def _guarded(self, name: str, step: Callable[..., None], *args: Any) -> None:
        """One study's step: its error is logged and never stops the tick for the others."""
        try:
            step(*args)
        except StudyNotFoundError:  # deleted meanwhile: the sweep stops its runner
            pass
        except Exception:
            log.exception("supervisor: study %s: %s failed; trying again next tick",
                          name, step.__name__.strip("_"))

    # -- pending and running studies ------------------------------------------------------

    def _start(self, name: str) -> None:
        """Idempotent: a live, busy runner answers False; an idle one resumes the study
        from the store; a dead one is replaced by a new one."""
        if name in self._starting or name in self._cancels:
            return
        self._actors[name], self._starting[name] = launch_runner(name, self.store.url)

    def _started(self, name: str, ref: ray.ObjectRef) -> None:
        try:
            ray.get(ref)  # False: busy already, or it recorded why the study cannot start
        except ray.exceptions.RayActorError as exc:  # its process died, or never came up
            self._actors.pop(name, None)
            self._start_failed(name, exc)
            return
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            if isinstance(cause, StudyNotFoundError) or is_database_error(cause):
                log.warning("study %s: its runner did not start (%s); trying again",
                            name, _reason(cause))
                return  # deleted (the sweep stops it), or the database is down: not its fault
            self._start_failed(name, cause)
            return
        self._failures.pop(name, None)

    def _start_failed(self, name: str, exc: Exception) -> None:
        """Try again next tick, up to START_ATTEMPTS in a row; then record the study failed
        with the reason, rather than restarting its runner forever."""
        tries = self._failures[name] = self._failures.get(name, 0) + 1
        if tries < START_ATTEMPTS:
            log.warning("study %s: its runner did not start (%s); trying again",
                        name, _reason(exc))
            return
        del self._failures[name]
        message = f"its runner could not start ({tries} tries): {_reason(exc)}"
        if self.store.set_status(name, "failed", message, only_from=ACTIVE):
            log.error("study %s failed: %s", name, message)

    # -- cancelling studies -----------------------------------------------------------

    def _cancel(self, name: str) -> None:
        """Never while a start is in flight: that runner could take the study up after it
        was marked cancelled here. (The runner itself refuses a cancelling study.)"""
        if name in self._starting or name in self._cancels:
            return
        actor = self._actors.get(name) or find_runner(name, self.store.url)
        if actor is None:  # pending, or its runner is gone: nothing runs
            self._record_cancelled(name)
            return
        self._actors[name], self._cancels[name] = actor, actor.cancel.remote()

    def _cancelled(self, name: str, ref: ray.ObjectRef) -> None:
        try:
            stopped = ray.get(ref)  # True: it stopped the run and recorded it cancelled
        except ray.exceptions.RayError:  # its runner died: nothing runs
            self._actors.pop(name, None)
            stopped = False
        if not stopped:
            self._record_cancelled(name)

    def _record_cancelled(self, name: str) -> None:
        """No runner ran it to its end, so none runs its end-of-study hooks: ask for them."""
        if self.store.set_status(name, "cancelled", CANCELLED, only_from=("cancelling",)):
            study_ended_elsewhere(self.store.url, name)

    # -- ended and deleted studies ----------------------------------------------------

    def _stop_if_done(self, name: str) -> None:
        try:
            status: str | None = self.store.study(name).status
        except StudyNotFoundError:
            status = None
        if status in KEEP or name in self._stopping:  # resumed since this tick read the store
            return
        self._starting.pop(name, None)
        self._cancels.pop(name, None)
        self._failures.pop(name, None)
        actor = self._actors.get(name) or find_runner(name, self.store.url)
        if actor is None:
            return
        # Its thread may still be about to hand the study to the end-of-study hooks: stop
        # the runner once that thread has ended (a call sent to the hook actor survives).
        self._actors[name] = actor
        self._stopping[name] = actor.wait.remote(HOOKS_WAIT_SECONDS + 60)

    def _runner_done(self, name: str, ref: ray.ObjectRef) -> None:
        actor = self._actors.pop(name, None) or find_runner(name, self.store.url)
        if actor is None:
            return
        try:
            ray.get(ref)
        except ray.exceptions.RayActorError:  # gone already
            return
        try:
            status: str | None = self.store.study(name).status
        except StudyNotFoundError:
            status = None
        if status in KEEP:  # resumed while it finished: the same runner takes it up
            self._actors[name] = actor
            return
        stop_runner(actor)
        log.info("study %s is %s: its runner is stopped", name, status or "deleted")


def _capacity() -> tuple[float, float]:
    """The cluster's CPUs, and the memory Ray has on the node where runners live."""
    home = head_node_id()
    memory = sum(n["Resources"].get("memory", 0.0) for n in ray.nodes() if n["NodeID"] == home)
    return ray.cluster_resources().get("CPU", 0.0), memory


def _reason(exc: BaseException) -> str:
    """One line for a person: the last line of Ray's report is the error itself."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else exc.__class__.__name__)[:300]
