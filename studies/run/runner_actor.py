"""One named, detached Ray actor per running study: the study's only writer.

The actor drives `Runner` in a thread of its own; its other methods answer trial
reports, progress questions and cancels while that thread runs. Anyone connected
to the cluster finds a study's runner by name, so a CLI or a restarted service can
watch, cancel or replace it.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
import traceback
from typing import Any

import optuna
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from stagetune.studies.errors import DatabaseAway
from stagetune.studies.reporting.study_end import study_ended
from stagetune.studies.run.cluster import NAMESPACE, connect, head_node_id
from stagetune.studies.run.ray_executor import RayExecutor
from stagetune.studies.run.runner import Runner
from stagetune.studies.search.loop import abandon_running
from stagetune.studies.spec import StudySpec
from stagetune.studies.store import (
    Store,
    is_database_error,
    retry_seconds,
    set_retry_seconds,
    store_away,
    wait_out,
)
from stagetune.workers.plugins import load_plugins

log = logging.getLogger(__name__)

CANCEL_WAIT_SECONDS = 30.0


def runner_name(study: str, store_url: str) -> str:
    """The actor's name: the study plus a digest of its store, so that two stores on one
    cluster never share a runner."""
    return f"runner:{study}@{hashlib.sha1(store_url.encode()).hexdigest()[:10]}"


@ray.remote(num_cpus=0, max_concurrency=64, max_restarts=0)  # type: ignore[call-overload]
class StudyRunner:
    def __init__(self, study: str, store_url: str, db_retry_seconds: float | None) -> None:
        self._broken = ""  # why no study can run here (a plugin that cannot be imported)
        try:
            load_plugins()
        except Exception as exc:  # start() records it: an actor that dies here says less
            self._broken = str(exc)
        if db_retry_seconds is not None:
            set_retry_seconds(db_retry_seconds)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study, self.store = study, Store(store_url)
        self._thread: threading.Thread | None = None
        self._executor: RayExecutor | None = None
        self._result: dict[str, Any] | None = None
        self._progress: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._failing_since = 0.0  # the first database error since the study last progressed

    def start(self) -> bool:
        """Run (or resume) the study in the background; False if it is already running, or
        if it cannot start (its spec no longer validates, a plugin is missing): then the
        study is recorded failed with the reason, and a supervisor does not try again."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            try:
                spec = self._spec()
            except Exception as exc:
                if is_database_error(exc):
                    raise
                reason = f"the study cannot start: {exc}"
                log.error("study %s: %s", self.study, reason)
                self._result = _failed(self.study, reason)
                self.store.set_status(self.study, "failed", reason,
                                      only_from=("pending", "running"))
                return False
            self._executor = RayExecutor(spec.resources,
                                         runner=ray.get_runtime_context().current_actor,
                                         on_wait=self._waiting)
            self._result, self._progress = None, {}
            self._thread = threading.Thread(target=self._run, args=(spec,), daemon=True)
            self._thread.start()
            return True

    def _spec(self) -> StudySpec:
        # its errors name the field and what is allowed; the registries (torch) are skipped
        from stagetune.studies.spec import stored_spec

        if self._broken:
            raise ValueError(self._broken)
        return stored_spec(self.store.study(self.study).spec)

    def _run(self, spec: StudySpec) -> None:
        """Run the study, then what is configured to follow its end (an MLflow export, a
        webhook; studies/reporting/study_end.py), before the thread ends: `wait_for` sees the study
        running until they are done."""
        self._drive(spec)
        study_ended(self.store.url, self.study, self._result)  # never raises

    def _drive(self, spec: StudySpec) -> None:
        """Run the study; after a database error, resume it from the store with backoff
        for up to `retry_seconds()`, then record it failed with the reason. (Not tenacity:
        its delays count from the first attempt, and a study runs for hours before its
        first database error; this window starts at the first error since the study last
        progressed, `_tick`.) While trials run, the runner's writes wait for the database
        themselves (`studies.search.loop`), and one that waited all that time (DatabaseAway)
        fails the study at once."""
        assert self._executor is not None
        delay = 1.0
        while True:
            try:
                self._result = Runner(spec, self.store, self._executor,
                                      progress=self._tick).run().to_dict()
                return
            except Exception as exc:
                reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
                if not is_database_error(exc):  # the runner recorded it failed
                    log.exception("study %s failed: %s", self.study, exc)
                    self._fail(reason, recorded=True)
                    return
                self._failing_since = self._failing_since or time.monotonic()
                if not isinstance(exc, DatabaseAway) \
                        and time.monotonic() - self._failing_since + delay <= retry_seconds():
                    log.warning("study %s: database error (%s); resuming in %.0f s",
                                self.study, reason, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                self._fail(reason if isinstance(exc, DatabaseAway) else str(store_away(exc)))
                return

    def _fail(self, reason: str, recorded: bool = False) -> None:
        """Record the study failed with `reason` (unless the runner has), and fail the
        trials it leaves running with it (the executor stopped them), waiting for the
        database as long as a runner does: no failed study shows a trial running. Still
        unreachable after that, both stay running, and the next runner resumes the study."""
        self._result = _failed(self.study, reason)
        why = f"stopped when its study failed: {reason}. A resume runs it again."
        try:
            wait_out(abandon_running, self.store, self.study, why)
            if not recorded:
                wait_out(self.store.set_status, self.study, "failed", reason)
        except Exception:
            log.exception("study %s: cannot record the failure", self.study)

    def _waiting(self, why: str) -> None:
        """Say in the study's message why its trials wait ("" clears it), where the API,
        the dashboard and `stagetune status` show it."""
        self.store.set_status(self.study, "running", why, only_from=("running",))

    def _tick(self, stage: str, done: int, total: int) -> None:
        self._progress[stage] = (done, total)
        self._failing_since = 0.0  # it got past the database: the next outage waits anew

    def started(self, token: str, where: dict[str, Any]) -> bytes | None:
        """A trial's attempt began; a retry gets back its last checkpoint."""
        return self._executor.started(token, where) if self._executor is not None else None

    def checkpoint(self, token: str, epoch: int, checkpoint: bytes) -> None:
        """A trial's checkpoint, over the wire, written before the trial goes on."""
        if self._executor is not None:
            self._executor.save(token, epoch, checkpoint)

    def report(self, token: str, epoch: int, metrics: dict[str, float]) -> bool:
        """A trial's epoch, over the wire; True tells it to stop."""
        return self._executor.deliver(token, epoch, metrics) if self._executor else True

    def progress(self) -> dict[str, Any]:
        running = self._thread is not None and self._thread.is_alive()
        executor = self._executor
        return {"running": running, "stages": dict(self._progress), "result": self._result,
                "trials": executor.running() if executor else [],
                "peak_running": executor.peak_running if executor else 0}

    def stack(self) -> str:
        """Where the study's thread is now, for a report on a study that does not end."""
        frame = sys._current_frames().get(self._thread.ident or -1) if self._thread else None
        return "".join(traceback.format_stack(frame)) if frame is not None else ""

    def wait(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The study's report once the run ends; None if `timeout` passes first."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._result

    def cancel(self) -> bool:
        """Stop the running trials and wait until they are recorded as cancelled."""
        if self._executor is None or self._thread is None or not self._thread.is_alive():
            return False
        self._executor.cancel()
        self._thread.join(CANCEL_WAIT_SECONDS)
        return True


def _failed(study: str, message: str) -> dict[str, Any]:
    return {"study": study, "status": "failed", "message": message}


def start_runner(study: str, store_url: str, db_retry_seconds: float | None = None) -> Any:
    """The study's runner, created if none is alive, and started."""
    actor, started = launch_runner(study, store_url, db_retry_seconds)
    ray.get(started)
    return actor


def launch_runner(study: str, store_url: str, db_retry_seconds: float | None = None
                  ) -> tuple[Any, ray.ObjectRef]:
    """Create the study's runner if none is alive and ask it to start, without waiting:
    the actor and the reference its `start` answers on (a new actor's process takes
    seconds to come up; a supervisor starts many at once). It lives on the head node:
    GPU workers come and go, and may not reach the database. (The affinity is hard:
    Ray 2.60 placed soft-affine detached actors on other nodes in our tests.) It waits
    for a database that is away as long as this process's setting says (the service's
    STAGETUNE_DB_RETRY_SECONDS, not the environment its Ray node started with)."""
    if db_retry_seconds is None:
        db_retry_seconds = retry_seconds()
    connect()
    actor = StudyRunner.options(  # type: ignore[attr-defined]
        name=runner_name(study, store_url), namespace=NAMESPACE, lifetime="detached",
        get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(head_node_id(), soft=False),
    ).remote(study, store_url, db_retry_seconds)
    return actor, actor.start.remote()


def runner_studies(store_url: str) -> list[str]:
    """The studies of this store that have a runner on the cluster, whoever started it
    (runners are detached: they outlive the service that started them)."""
    connect()
    prefix, suffix = "runner:", runner_name("", store_url).removeprefix("runner:")
    return [name.removeprefix(prefix).removesuffix(suffix)
            for name in ray.util.list_named_actors()
            if name.startswith(prefix) and name.endswith(suffix)]


def find_runner(study: str, store_url: str) -> Any | None:
    """The study's live runner, or None."""
    connect()
    try:
        return ray.get_actor(runner_name(study, store_url), namespace=NAMESPACE)
    except ValueError:
        return None


def cancel_study(study: str, store_url: str) -> bool:
    """Cancel a running study. With no live runner, a study still marked running is marked
    cancelled in the store. True if it was running."""
    actor = find_runner(study, store_url)
    if actor is not None and ray.get(actor.cancel.remote()):
        return True
    store = Store(store_url)
    if store.study(study).status in ("running", "pending", "cancelling"):
        store.set_status(study, "cancelled", "cancelled on request; resume to go on")
        return True
    return False


def stop_runner(actor: Any) -> None:
    """Free a finished runner's process (the store keeps everything it did)."""
    ray.kill(actor, no_restart=True)


def wait_for(actor: Any, poll: float = 0.5, on_progress: Any = None) -> dict[str, Any]:
    """Block until the runner's study ends, calling on_progress(progress) as it goes."""
    while True:
        progress = ray.get(actor.progress.remote())
        if on_progress is not None:
            on_progress(progress)
        if not progress["running"] and progress["result"] is not None:
            return progress["result"]  # type: ignore[no-any-return]
        time.sleep(poll)
