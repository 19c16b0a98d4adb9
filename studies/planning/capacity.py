"""Whether a trial's resources fit a node of the cluster: a trial that no node can ever
hold would wait in Ray's queue forever, so submit refuses it and a runner says it waits."""

from __future__ import annotations

import ray

from stagetune.studies.spec import Resources

# How the spec names each Ray resource, and its unit in a sentence
_FIELDS = {"CPU": ("cpus_per_trial", "CPUs"), "GPU": ("gpus_per_trial", "GPUs")}


def node_resources() -> list[dict[str, float]]:
    """What each live node of the cluster offers in all (Ray's resource totals)."""
    return [dict(node["Resources"]) for node in ray.nodes() if node["Alive"]]


def trial_demand(resources: Resources) -> dict[str, float]:
    """The Ray resources one trial asks for (those it asks none of left out)."""
    wanted = {"CPU": resources.cpus_per_trial, "GPU": resources.gpus_per_trial,
              **resources.custom}
    return {name: amount for name, amount in wanted.items() if amount > 0}


def unmet(resources: Resources, nodes: list[dict[str, float]]) -> tuple[str, str] | None:
    """None when some node can hold one trial; else the spec's field and a sentence
    ("needs 256 CPUs per trial; the largest node has 2")."""
    wanted = trial_demand(resources)
    if any(all(node.get(k, 0.0) + 1e-9 >= v for k, v in wanted.items()) for node in nodes):
        return None
    for name, amount in wanted.items():
        most = max((node.get(name, 0.0) for node in nodes), default=0.0)
        if most + 1e-9 < amount:
            return _field(name), f"needs {_amount(name, amount)} per trial; " + (
                f"the largest node has {most:g}" if most else
                f"no node has {'any' if name in _FIELDS else 'it'}")
    asked = " and ".join(_amount(k, v) for k, v in wanted.items())
    return "resources", f"needs {asked} per trial on one node; no node has all of them"


def _field(name: str) -> str:
    return f"resources.{_FIELDS[name][0]}" if name in _FIELDS else f"resources.custom.{name}"


def _amount(name: str, amount: float) -> str:
    return f"{amount:g} {_FIELDS[name][1]}" if name in _FIELDS else \
        f"{amount:g} of the custom resource '{name}'"
