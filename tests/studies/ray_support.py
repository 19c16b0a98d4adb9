"""What the Ray tests share: small digits specs and ways to watch a runner from outside."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import optuna
import ray

from stagetune.studies.search.stages import ORDER
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store

NO_PROBES = {"baseline": {"enabled": False}, "lr_probe": {"enabled": False},
             "overfit": {"enabled": False}}


def digits_spec(name: str, *, stages: dict[str, Any], resources: dict[str, Any],
                **extra: Any) -> dict[str, Any]:
    return {"name": name, "task": {"dataset": "digits", "model": "convnet"},
            "space": {"lr": {"type": "float", "low": 3e-3, "high": 3e-2, "log": True},
                      "width": {"type": "int", "low": 8, "high": 24}},
            "stages": stages, "resources": resources, **extra}


def submit(store_url: str, spec: dict[str, Any]) -> Store:
    """Put a study in the store, as `stagetune run` and the service do before starting it."""
    store = Store(store_url)
    parsed = load_spec(spec)
    store.open_study(parsed.name, parsed.to_store(), list(ORDER))
    return store


def wait_until(what: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting until {message}{ray_now()}")


def ray_now() -> str:
    """Where this process's Ray stands, for a timeout's message: free and total CPUs, and
    its live actors (a trial that never starts is most often one that finds no CPU)."""
    if not ray.is_initialized():
        return ""
    try:
        actors = sorted(f"{a['Name'] or a['ActorClassName']}({a['State']})"
                        for a in ray._private.state.actors().values() if a["State"] != "DEAD")
        return (f"; Ray: CPU {ray.available_resources().get('CPU', 0):g} free of "
                f"{ray.cluster_resources().get('CPU', 0):g}, actors {actors}")
    except Exception as exc:  # noqa: BLE001  (a diagnosis must not hide the timeout)
        return f"; Ray's state unreadable: {exc}"


def finish(actor: Any, timeout: float) -> dict[str, Any]:
    """The runner's report once its study ends; after `timeout`, a failure that says
    where it stood (its stages, its running trials), not a hang until pytest's limit."""
    deadline = time.monotonic() + timeout
    while True:
        now = progress(actor)
        if not now["running"] and now["result"] is not None:
            return now["result"]  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            stack = ray.get(actor.stack.remote())
            raise AssertionError(f"the study did not end in {timeout:.0f} s: {now}\n"
                                 f"its thread is at:\n{stack}")
        time.sleep(0.5)


def progress(actor: Any) -> dict[str, Any]:
    return ray.get(actor.progress.remote())  # type: ignore[no-any-return]


def trials(store_url: str, study: str, stage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        loaded = optuna.load_study(study_name=f"{study}:{stage}", storage=_storage(store_url))
    except KeyError:
        return []
    return loaded.get_trials(deepcopy=False)


@functools.cache
def _storage(store_url: str) -> optuna.storages.RDBStorage:
    """One storage per store: a storage per poll would open a connection pool each time,
    and polling every 0.1 s took all 100 of PostgreSQL's connections within a minute."""
    return optuna.storages.RDBStorage(store_url)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                   key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak
