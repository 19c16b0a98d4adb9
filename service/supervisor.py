"""Keeps one live runner per study that should be running.

Every few seconds it looks at the store: a study that is pending (just submitted or
resumed) or running without a live runner (its runner died, or the service restarted)
gets one. Runners it started for studies that have ended are stopped, freeing their
processes; the store keeps everything they did. One service per store: two services
on two Ray clusters would each start a runner for the same study.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray

from studies.runner_actor import start_runner, stop_runner
from studies.store import Store

log = logging.getLogger(__name__)

ACTIVE = ("pending", "running")


class Supervisor:
    def __init__(self, store: Store, interval: float = 2.0) -> None:
        self.store, self.interval = store, interval
        self._actors: dict[str, Any] = {}
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
        """Look now rather than at the next tick (a study was submitted or resumed)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reconcile()
            except Exception:  # a database or Ray hiccup: try again next tick
                log.exception("supervisor: reconcile failed; retrying")
            self._wake.wait(self.interval)
            self._wake.clear()

    def _reconcile(self) -> None:
        for status in ACTIVE:
            records, _ = self.store.list_studies(status=status, limit=10_000)
            for record in records:
                if self._stop.is_set():
                    return
                # idempotent: a live, busy runner is left alone; an idle or dead one is
                # (re)started, and resumes the study from the store
                self._actors[record.name] = start_runner(record.name, self.store.url)
        for name, actor in list(self._actors.items()):
            try:
                ended = not ray.get(actor.progress.remote())["running"]
            except ray.exceptions.RayActorError:  # died: the next tick starts another
                ended = True
            if ended and self.store.study(name).status not in ACTIVE:
                stop_runner(actor)
                del self._actors[name]
