"""What a spec may name: datasets, models, trainers, losses, metrics, parameters, stages,
samplers and pruners, each entry with the knobs it declares."""

from __future__ import annotations

from typing import Any, get_args

from fastapi import APIRouter

from stagetune.service.schemas import Registry
from stagetune.studies.spec import CoarseStage, RefineStage
from stagetune.studies.stages import ORDER
from stagetune.workers.config import KNOWN_PARAMS
from stagetune.workers.data import DATASETS, SPLIT_OPTIONS, dataset_options_model
from stagetune.workers.knobs import describe_entry
from stagetune.workers.losses import LOSSES
from stagetune.workers.metrics import METRICS
from stagetune.workers.models import MODELS
from stagetune.workers.registry import Registry as Entries
from stagetune.workers.trainers import TRAINERS

router = APIRouter(tags=["registry"])


def _entries(registry: Entries[Any]) -> dict[str, dict[str, Any]]:
    return {name: describe_entry(registry.entry(name)) for name in registry.names()}


@router.get("/registry", response_model=Registry)
def registry() -> Registry:
    """Every registered name a spec may use (plugins included), with each entry's own knobs
    (type, default, bounds); a dataset's knobs are its options."""
    datasets = {name: describe_entry(DATASETS.entry(name), dataset_options_model(name),
                                     skip=SPLIT_OPTIONS)
                for name in DATASETS.names()}
    return Registry.model_validate(dict(
        datasets=datasets, models=_entries(MODELS), trainers=_entries(TRAINERS),
        losses=_entries(LOSSES), metrics=_entries(METRICS),
        parameters=sorted(KNOWN_PARAMS), stages=list(ORDER),
        samplers={"coarse": list(get_args(CoarseStage.model_fields["sampler"].annotation)),
                  "refine": list(get_args(RefineStage.model_fields["sampler"].annotation))},
        pruners=list(get_args(RefineStage.model_fields["pruner"].annotation))))
