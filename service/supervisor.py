"""Acts on what the store says each study should be doing, like a Kubernetes controller.

Every few seconds, and at once when the API writes (`kick`), a tick reads the desired state
of every study from the store (`Want`), hears the answers to the calls it sent its runners
on earlier ticks (`Heard`), and takes one step per study toward what is wanted. The
supervisor keeps one `RunnerRecord` per study (its phase, its runner, the call in flight,
its failed starts); `transition` is its whole policy, a pure function tested row by row
(tests/service/test_supervisor_transitions.py):

- a study that is running without a live runner (its runner died, or the service
  restarted) gets one; so does a pending one (just submitted or resumed) once the limit on
  running studies lets it through (service/admission.py): the others wait in the order
  they were queued, with no process, and their message says where they are. Runners start
  concurrently: a tick asks each to start and hears back on a later tick, never waiting
  for a runner's process to come up. A runner that fails to start START_ATTEMPTS times in
  a row fails its study, with the reason;
- a study that is cancelling has its runner stop it (the runner records it cancelled);
  with no runner working on it, it is recorded cancelled here, and its end-of-study hooks
  are asked for here;
- a runner whose study ended or was deleted is stopped once its thread has ended (it may
  still be handing the study to the end-of-study hooks), whoever started it (runners are
  detached and found by name, so a restarted service stops its predecessor's too),
  freeing its process; the store keeps everything it did.

A study has at most one call in flight: no cancel while its start is unanswered (that
runner could take the study up after it was marked cancelled here). One study's trouble
(deleted meanwhile, a runner that will not start) never stops a tick for the others. One
service per store: two services on two Ray clusters would each start a runner for the
same study.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

import ray

from stagetune.service.admission import admit, default_limit
from stagetune.studies.errors import StudyNotFoundError
from stagetune.studies.reporting.study_end import WAIT_SECONDS as HOOKS_WAIT_SECONDS
from stagetune.studies.reporting.study_end import study_ended_elsewhere
from stagetune.studies.run.cluster import head_node_id
from stagetune.studies.run.runner import CANCELLED
from stagetune.studies.run.runner_actor import find_runner, launch_runner, runner_studies, stop_runner
from stagetune.studies.store import Queued, Store, is_database_error, note_pending, queued_studies

log = logging.getLogger(__name__)

ACTIVE = ("pending", "running")  # studies that need a runner working on them
START_ATTEMPTS = 3  # a runner that fails this often in a row to start its study fails it
STARTING = "starting"  # a queued study's message once its runner is asked to start


class Want(StrEnum):
    """What the store asks for a study."""

    RUN = "run"  # running, or pending and let through by the queue
    WAIT = "wait"  # pending behind the limit on running studies
    CANCEL = "cancel"  # cancelling
    END = "end"  # ended, or deleted: no runner is left for it


class Phase(StrEnum):
    """Which call the supervisor has in flight to the study's runner."""

    IDLE = "idle"  # none
    STARTING = "starting"  # start (a runner that is busy with the study answers at once)
    CANCELLING = "cancelling"  # cancel
    STOPPING = "stopping"  # wait for its thread to end, before the runner is stopped


class Heard(StrEnum):
    """The answer to the call in flight."""

    NOTHING = "nothing"  # no call in flight, or no answer yet
    DONE = "done"  # answered: started (or busy with it already), cancelled it, thread ended
    NOT_RUNNING = "not running"  # cancel answered that nothing ran the study
    DIED = "died"  # the runner died, or its process never came up
    FAILED = "failed"  # the call raised: for a start, the study cannot start there
    NOT_ITS_FAULT = "not its fault"  # a start raised for the store's sake (deleted, away)


class Action(StrEnum):
    NONE = "none"
    START = "start"  # ask the runner (a new one if none lives) to start the study
    CANCEL = "cancel"  # ask the runner to stop the study
    RECORD_CANCELLED = "record cancelled"  # nothing ran it: record it, ask for its hooks
    AWAIT_END = "await end"  # ask the runner to answer once its thread has ended
    STOP_RUNNER = "stop runner"  # free the runner's process
    RETRY = "retry"  # a failed start: say so, start again on the next tick
    FAIL = "fail"  # the last failed start: record the study failed, with the reason


@dataclass(frozen=True)
class Seen:
    """What one tick observes of a study."""

    want: Want
    heard: Heard = Heard.NOTHING
    runner: bool = False  # a runner of the study lives on the cluster
    failures: int = 0  # starts in a row that failed before (the record's count)


class Step(NamedTuple):
    phase: Phase
    action: Action
    failures: int


def transition(phase: Phase, seen: Seen) -> Step:
    """The one step from `phase` toward what the store wants, given what was seen."""
    failures = seen.failures
    if phase is Phase.IDLE and seen.heard is Heard.NOTHING:
        return _from_idle(seen)
    if phase is not Phase.IDLE and seen.heard is Heard.NOTHING:
        return Step(phase, Action.NONE, failures)  # its answer comes on a later tick
    match phase, seen.heard:
        case Phase.STARTING, Heard.DONE:
            return Step(Phase.IDLE, Action.NONE, 0)
        case Phase.STARTING, Heard.DIED | Heard.FAILED:
            if failures + 1 < START_ATTEMPTS:
                return Step(Phase.IDLE, Action.RETRY, failures + 1)
            return Step(Phase.IDLE, Action.FAIL, 0)
        case Phase.STARTING, Heard.NOT_ITS_FAULT:  # not counted: the next tick tries again
            return Step(Phase.IDLE, Action.NONE, failures)
        case Phase.CANCELLING, Heard.DONE:  # the runner recorded it cancelled
            return Step(Phase.IDLE, Action.NONE, failures)
        case Phase.CANCELLING, Heard.NOT_RUNNING | Heard.DIED | Heard.FAILED:
            return Step(Phase.IDLE, Action.RECORD_CANCELLED, failures)
        case Phase.STOPPING, Heard.DONE | Heard.FAILED:
            # stopped if its study is still over: resumed meanwhile, the runner takes it up
            stop = seen.want is Want.END
            return Step(Phase.IDLE, Action.STOP_RUNNER if stop else Action.NONE, failures)
        case Phase.STOPPING, Heard.DIED:  # gone already
            return Step(Phase.IDLE, Action.NONE, failures)
    raise ValueError(f"a study in phase '{phase}' cannot have heard '{seen.heard}': no such "
                     "call was in flight")


def _from_idle(seen: Seen) -> Step:
    match seen.want:
        case Want.RUN:  # every tick: a busy runner answers at once, a dead one is replaced
            return Step(Phase.STARTING, Action.START, seen.failures)
        case Want.CANCEL if seen.runner:
            return Step(Phase.CANCELLING, Action.CANCEL, seen.failures)
        case Want.CANCEL:  # pending, or its runner is gone: nothing runs
            return Step(Phase.IDLE, Action.RECORD_CANCELLED, seen.failures)
        case Want.END if seen.runner:
            return Step(Phase.STOPPING, Action.AWAIT_END, seen.failures)
    return Step(Phase.IDLE, Action.NONE, seen.failures)


@dataclass
class RunnerRecord:
    """What the supervisor knows of one study's runner."""

    name: str
    phase: Phase = Phase.IDLE
    actor: Any = None  # the runner's handle, once this supervisor has had one
    call: ray.ObjectRef | None = None  # the call in flight, as `phase` says
    heard: Heard = Heard.NOTHING  # its answer, until a step has acted on it
    failures: int = 0  # starts in a row that failed
    error: str = ""  # why the last call failed, one line for a person
    since: float = field(default_factory=time.monotonic)  # when it entered `phase`


class Supervisor:
    def __init__(self, store: Store, interval: float = 2.0, max_running: int | None = None
                 ) -> None:
        """`max_running`: studies whose runners run at once; None: what the cluster can
        serve, looked at on every tick (a cluster grows and shrinks)."""
        self.store, self.interval, self.max_running = store, interval, max_running
        self.records: dict[str, RunnerRecord] = {}  # touched by the supervisor's thread only
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
        self._hear()  # before the store is read: the answers' writes are in it
        listed = set(runner_studies(self.store.url))
        runners = listed | {n for n, r in self.records.items() if r.actor is not None}
        wants = self._wants(runners)
        for name in [*wants, *sorted((runners | set(self.records)) - set(wants))]:
            if self._stop.is_set():
                return
            record = self.records.setdefault(name, RunnerRecord(name))
            want = wants.get(name, Want.END)
            self._steps(record, want, listed)
            if record.phase is Phase.IDLE and want is Want.END and record.actor is None:
                del self.records[name]  # nothing left to do for it

    def _steps(self, record: RunnerRecord, want: Want, listed: set[str]) -> None:
        """The step on what was heard, and, where that step left the store as this tick
        read it, the next one at once (a failed start is retried, a study cancelled right
        after its start answered gets its cancel), as a controller requeues."""
        for _ in range(2 if record.heard is not Heard.NOTHING else 1):
            seen = Seen(want, record.heard, failures=record.failures,
                        runner=record.actor is not None or record.name in listed)
            action = self._step(record, seen)
            if action not in (Action.NONE, Action.RETRY) or record.phase is not Phase.IDLE:
                return

    def _wants(self, runners: set[str]) -> dict[str, Want]:
        """What the store wants of each pending, running and cancelling study (read in
        that order, the order studies move in, so none is missed between two reads)."""
        queue = queued_studies(self.store.url)
        statuses = dict.fromkeys((q.name for q in queue), "pending")
        for status in ("running", "cancelling"):
            records, _ = self.store.list_studies(status=status, limit=10_000)
            statuses.update((r.name, r.status) for r in records)
        admitted = self._admit(queue, runners, busy=runners | {n for n, s in statuses.items()
                                                               if s != "pending"})
        return {name: (Want.CANCEL if status == "cancelling" else
                       Want.RUN if status == "running" or name in admitted else Want.WAIT)
                for name, status in statuses.items()}

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

    # -- observing ------------------------------------------------------------------------

    def _hear(self) -> None:
        """Take in the answers that have come back to calls sent on earlier ticks (none is
        waited for); each stays in its record until a step acts on it."""
        calls = {r.call: r for r in self.records.values() if r.call is not None}
        if not calls:
            return
        ready, _ = ray.wait(list(calls), num_returns=len(calls), timeout=0)
        for ref in ready:
            record = calls[ref]
            record.call, record.heard = None, _answer(record, ref)

    # -- acting ---------------------------------------------------------------------------

    def _step(self, record: RunnerRecord, seen: Seen) -> Action | None:
        """Take the record's step: its action, or None where it failed. An error is logged
        and never stops the tick for the others; it leaves the record idle, with no call in
        flight, for the next tick to start over from what the store wants."""
        record.heard = Heard.NOTHING  # acted on now, whatever comes of it
        try:
            step = transition(record.phase, seen)
            self._act(record, step.action)
        except Exception as exc:
            if not isinstance(exc, StudyNotFoundError):  # deleted: the next tick sees it gone
                log.exception("supervisor: study %s: a step from %s failed; trying again next "
                              "tick", record.name, record.phase)
            self._enter(record, Phase.IDLE)
            return None
        # a call's phase needs the call: none was sent where no runner was found
        self._enter(record, step.phase if record.call is not None else Phase.IDLE)
        record.failures = step.failures
        return step.action

    @staticmethod
    def _enter(record: RunnerRecord, phase: Phase) -> None:
        if phase is not record.phase:
            record.phase, record.since = phase, time.monotonic()

    def _act(self, record: RunnerRecord, action: Action) -> None:
        name, url = record.name, self.store.url
        match action:
            case Action.START:
                record.actor, record.call = launch_runner(name, url)
            case Action.CANCEL:
                record.actor = record.actor or find_runner(name, url)
                record.call = record.actor.cancel.remote() if record.actor else None
            case Action.AWAIT_END:
                # its thread may still be handing the study to the end-of-study hooks: stop
                # the runner once it has ended (a call sent to the hook actor survives)
                record.actor = record.actor or find_runner(name, url)
                record.call = (record.actor.wait.remote(HOOKS_WAIT_SECONDS + 60)
                               if record.actor else None)
            case Action.STOP_RUNNER:
                stop_runner(record.actor)
                record.actor = None
                log.info("study %s has ended or is deleted: its runner is stopped", name)
            case Action.RECORD_CANCELLED:  # no runner ran it to its end to run its hooks
                if self.store.set_status(name, "cancelled", CANCELLED, only_from=("cancelling",)):
                    study_ended_elsewhere(url, name)
            case Action.RETRY:
                log.warning("study %s: its runner did not start (%s); trying again",
                            name, record.error)
            case Action.FAIL:
                message = f"its runner could not start ({START_ATTEMPTS} tries): {record.error}"
                if self.store.set_status(name, "failed", message, only_from=ACTIVE):
                    log.error("study %s failed: %s", name, message)


def _answer(record: RunnerRecord, ref: ray.ObjectRef) -> Heard:
    """What the record's call answered, which is ready."""
    try:
        answer = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, Exception) else exc
        record.error = _reason(cause)
        if record.phase is Phase.STARTING and (isinstance(cause, StudyNotFoundError)
                                               or is_database_error(cause)):
            # deleted (the next tick stops its runner), or the database is away
            log.warning("study %s: its runner did not start (%s); trying again",
                        record.name, record.error)
            return Heard.NOT_ITS_FAULT
        return Heard.FAILED
    except ray.exceptions.RayError as exc:  # its process died, or never came up
        record.actor, record.error = None, _reason(exc)
        return Heard.DIED
    if record.phase is Phase.STARTING and answer is True:
        log.info("study %s: its runner started (%.1f s)", record.name,
                 time.monotonic() - record.since)
    if record.phase is Phase.CANCELLING and answer is False:
        return Heard.NOT_RUNNING
    return Heard.DONE


def _capacity() -> tuple[float, float]:
    """The cluster's CPUs, and the memory Ray has on the node where runners live."""
    home = head_node_id()
    memory = sum(n["Resources"].get("memory", 0.0) for n in ray.nodes() if n["NodeID"] == home)
    return ray.cluster_resources().get("CPU", 0.0), memory


def _reason(exc: BaseException) -> str:
    """One line for a person: the last line of Ray's report is the error itself."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else exc.__class__.__name__)[:300]
