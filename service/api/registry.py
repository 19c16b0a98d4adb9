"""What a spec may name: datasets, models, trainers, losses, metrics, parameters, stages,
samplers and pruners, each entry with the knobs it declares."""

from __future__ import annotations

from typing import get_args

from fastapi import APIRouter

from stagetune.service.schemas import Registry
from stagetune.studies.search.stages import ORDER
from stagetune.studies.spec import CoarseStage, RefineStage
from stagetune.workers.catalog import catalog_apart  # the registries import torch: not here

router = APIRouter(tags=["registry"])


@router.get("/registry", response_model=Registry)
def registry() -> Registry:
    """Every registered name a spec may use (plugins included), with each entry's own knobs
    (type, default, bounds); a dataset's knobs are its options."""
    return Registry.model_validate(dict(
        **catalog_apart(), stages=list(ORDER),
        samplers={"coarse": list(get_args(CoarseStage.model_fields["sampler"].annotation)),
                  "refine": list(get_args(RefineStage.model_fields["sampler"].annotation))},
        pruners=list(get_args(RefineStage.model_fields["pruner"].annotation))))
