"""What a spec may name from the workers' registries (the plugins' entries included), each
entry with the knobs it declares, as plain data: the body of GET /api/registry."""

from __future__ import annotations

import functools
from typing import Any


def catalog() -> dict[str, Any]:
    """Datasets (their knobs are their options), models, trainers, losses, metrics, and the
    built-in parameters. Imports the registries, so torch."""
    from stagetune.workers.config import KNOWN_PARAMS
    from stagetune.workers.data import DATASETS, SPLIT_OPTIONS, dataset_options_model
    from stagetune.workers.knobs import describe_entry
    from stagetune.workers.losses import LOSSES
    from stagetune.workers.metrics import METRICS
    from stagetune.workers.models import MODELS
    from stagetune.workers.trainers import TRAINERS

    datasets = {name: describe_entry(DATASETS.entry(name), dataset_options_model(name),
                                     skip=SPLIT_OPTIONS)
                for name in DATASETS.names()}
    entries = {kind: {name: describe_entry(registry.entry(name)) for name in registry.names()}
               for kind, registry in (("models", MODELS), ("trainers", TRAINERS),
                                      ("losses", LOSSES), ("metrics", METRICS))}
    return {"datasets": datasets, **entries, "parameters": sorted(KNOWN_PARAMS)}


@functools.cache
def catalog_apart() -> dict[str, Any]:
    """`catalog()` from the worker-code child (workers.sidecar), for the API's process, which
    imports no torch. Kept: the plugins, loaded once a process, fix it for the process's life."""
    from stagetune.workers.sidecar import in_child

    return in_child(catalog)


__all__ = ["catalog", "catalog_apart"]
