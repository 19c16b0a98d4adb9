"""Worker code for a process that must not import torch: one child process runs it.

The API's process serves requests, reads the store and drives Ray; a few of its answers need
the workers' registries, which import torch, as do the plugins that fill them: the submit-time
check of a spec, the registry's listing, a Grad-CAM figure. Those run here, in one spawned child
that imports them once and stays warm while it is used, so the API's process stays small (no
torch: about 1 GB less) and still answers what the workers would.

Why a child process rather than a torch-free registry or a Ray task: an entry's knobs, a
dataset's options and a plugin are code in modules that import torch, so names alone cannot
check a spec; a Ray task may land on another node, with another data folder and other plugins,
and a request must not wait on Ray. The child runs the very functions the CLI runs, with this
process's settings and plugins (it inherits the environment).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from stagetune.workers.errors import StagetuneError

log = logging.getLogger(__name__)

T = TypeVar("T")

# A child left idle this long exits, giving its memory (torch's ~1 GB) back; the next call
# starts another, which takes as long as importing torch.
IDLE_SECONDS = 600.0
# A call that takes longer (a plugin's check that hangs) ends the child, so the calls queued
# behind it are not held too; the caller gets a WorkerCodeTimeout.
CALL_SECONDS = 300.0


class WorkerCodeTimeout(StagetuneError):
    """The worker-code child did not answer in time; it was ended."""


def in_child(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in this process's worker-code child, with the plugins loaded. `fn` must be a
    module-level function whose module imports no torch (the child imports it there), and it
    should return plain data: unpickling its result here must not import torch either."""
    return _SIDECAR.call(fn, *args)


def start() -> None:
    """Start the child now, with the plugins and the registries loaded: a broken plugin fails
    here, at once, and the first request finds the child warm."""
    from stagetune.workers.catalog import catalog

    in_child(catalog)


def stop() -> None:
    """End the child (the service is shutting down); a later call starts another."""
    _SIDECAR.close()


def _run(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    """In the child: the plugins register their names first, as in every worker process."""
    from stagetune.workers.plugins import load_plugins

    load_plugins()
    return fn(*args)


class Sidecar:
    """One child process (spawned: a fork of a process that runs threads and Ray is unsafe),
    started on first use and ended after `idle_seconds` without a call."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS, call_seconds: float = CALL_SECONDS
                 ) -> None:
        self.idle_seconds = idle_seconds
        self.call_seconds = call_seconds
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._busy = 0
        self._timer: threading.Timer | None = None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return self._call(fn, args)
        except BrokenProcessPool:  # the child died (killed, out of memory): once more, afresh
            log.warning("the worker-code process died; starting another")
            return self._call(fn, args)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            self._disarm()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            pool = self._pool
            self._busy += 1
            self._disarm()
        try:
            return pool.submit(_run, fn, args).result(timeout=self.call_seconds)
        except FutureTimeout:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            # the executor cannot stop a running call (3.11 has no terminate_workers): kill it
            for process in list(pool._processes.values()):
                process.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            raise WorkerCodeTimeout(
                f"the workers' code did not answer within {self.call_seconds:.0f} s (a plugin's "
                "check or dataset that hangs?); it was stopped, so try again") from None
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            raise
        finally:
            with self._lock:
                self._busy -= 1
                if not self._busy and self._pool is not None:
                    self._timer = threading.Timer(self.idle_seconds, self._close_if_idle)
                    self._timer.daemon = True
                    self._timer.start()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_if_idle(self) -> None:
        with self._lock:
            if self._busy or self._timer is not threading.current_thread():
                return  # a call came since this timer was set
            self._timer = None
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


_SIDECAR = Sidecar()

__all__ = ["CALL_SECONDS", "IDLE_SECONDS", "Sidecar", "WorkerCodeTimeout", "in_child", "start", "stop"]
