"""Joining Ray: the cluster at RAY_ADDRESS, else a local one started for this process."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import ray
import tenacity

from stagetune.workers.errors import StagetuneError
from stagetune.workers.settings import get_settings

log = logging.getLogger(__name__)

NAMESPACE = "stagetune"  # runner actors are named in it, so any process can find them
# A local Ray keeps an idle worker process for a minute, not Ray's default second: trials
# reuse warm workers (torch imported, data loaded) across the gaps between a study's
# stages, and while the runners of many studies ask for their next trials.
LOCAL_RAY_CONFIG = {"idle_worker_killing_time_threshold_ms": 60_000}


class ClusterError(StagetuneError):
    """Ray cannot be started or joined."""


def connect(address: str | None = None) -> None:
    """Join `address` (default $RAY_ADDRESS); with neither, start a local Ray on this
    machine's CPUs and GPUs. Safe to call again: a connected process stays connected."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    dashboard = ray_dashboard() if not address else False  # a joined cluster has its own
    if not address:
        with _own_sigterm_handler():
            _start_local(dashboard)
        return
    try:
        with _own_sigterm_handler():
            ray.init(address=address, namespace=NAMESPACE, include_dashboard=dashboard,
                     logging_level=logging.WARNING, log_to_driver=False,
                     configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address}: {exc}; check RAY_ADDRESS "
                           "(unset it to start a local Ray)") from None


@contextmanager
def _own_sigterm_handler() -> Iterator[None]:
    """Keep a SIGTERM handler the process installed itself (uvicorn's graceful shutdown, in a
    server that joins Ray from its lifespan): a Ray driver replaces it with one that calls
    sys.exit wherever the signal lands, which cut the shutdown short with a traceback. A
    process without one of its own (`stagetune run`) keeps Ray's, which unwinds it."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if callable(before):
            signal.signal(signal.SIGTERM, before)


def _start_local(dashboard: bool) -> None:
    """Start a new Ray of our own ("local": never another process's local one). Ray gives
    its node 30 s to come up, which a busy machine can miss: it is tried again until
    STAGETUNE_RAY_START_SECONDS are spent, each failed try's processes stopped first."""
    seconds = get_settings().ray_start_seconds
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(1) if seconds <= 0 else tenacity.stop_after_delay(seconds),
        wait=tenacity.wait_fixed(1.0), reraise=True,
        before_sleep=lambda state: log.warning(
            "a local Ray did not start (%s); trying again",
            _first_line(state.outcome.exception() if state.outcome else None)))
    tries = 0
    try:
        for attempt in retrying:
            with attempt:
                tries += 1
                _try_local(dashboard)
    except Exception as exc:  # Ray raises a bare Exception when its node misses the 30 s
        raise ClusterError(f"a local Ray did not start ({tries} tries in {seconds:g} s): "
                           f"{_first_line(exc)}; on a busy machine, allow it longer with "
                           "STAGETUNE_RAY_START_SECONDS, or set RAY_ADDRESS to join a running "
                           "Ray") from None


def _try_local(dashboard: bool) -> None:
    import psutil  # Ray's vendored copy: importing Ray put it on the path

    before = {child.pid for child in psutil.Process().children(recursive=True)}
    try:
        ray.init(address="local", namespace=NAMESPACE, include_dashboard=dashboard,
                 logging_level=logging.WARNING, log_to_driver=False, configure_logging=False,
                 _system_config=LOCAL_RAY_CONFIG)
    except BaseException:
        ray.shutdown()
        for child in psutil.Process().children(recursive=True):  # what this try started
            if child.pid not in before:
                try:
                    child.kill()
                except psutil.Error:  # gone already
                    pass
        raise


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def ray_dashboard() -> bool:
    """Whether a Ray that stagetune starts runs Ray's dashboard (STAGETUNE_RAY_DASHBOARD,
    off by default: it is one more server, on port 8265, with no login of its own). It
    needs Ray's full install; asked for without it, a ClusterError says how to get it."""
    if not get_settings().ray_dashboard:
        return False
    try:
        import ray.dashboard.optional_deps  # noqa: F401  (what Ray's own check imports)
    except ImportError as exc:
        raise ClusterError(f"STAGETUNE_RAY_DASHBOARD is on, but Ray's dashboard is not "
                           f"installed ({exc}); pip install 'stagetune[ray-dashboard]' "
                           "(ray[default]), or turn it off") from None
    return True


def head_node_id() -> str:
    """The head node (where the service and the store's clients live), else this node."""
    for node in ray.nodes():
        if node["Alive"] and "node:__internal_head__" in node["Resources"]:
            return str(node["NodeID"])
    return ray.get_runtime_context().get_node_id()
