"""Joining Ray: the cluster at RAY_ADDRESS, else a local one started for this process."""

from __future__ import annotations

import logging
import os

import ray

from stagetune.workers.errors import StagetuneError
from stagetune.workers.settings import get_settings

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
    try:  # "local": a new Ray of our own, never another process's local one
        ray.init(address=address or "local", namespace=NAMESPACE, include_dashboard=dashboard,
                 logging_level=logging.WARNING, log_to_driver=False, configure_logging=False,
                 _system_config=None if address else LOCAL_RAY_CONFIG)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ClusterError(f"cannot start or join {where}: {exc}; check RAY_ADDRESS "
                           "(unset it to start a local Ray)") from None


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
