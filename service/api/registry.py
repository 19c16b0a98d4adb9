"""What a spec may name: datasets, models, parameters, stages, samplers and pruners."""

from __future__ import annotations

import inspect
from typing import Any, get_args

from fastapi import APIRouter

from service.schemas import Registry
from studies.spec import CoarseStage, RefineStage
from studies.stages import ORDER
from workers.config import KNOWN_PARAMS
from workers.data import DATASETS
from workers.models import MODELS

router = APIRouter(tags=["registry"])


def _first_line(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").split("\n")[0]


@router.get("/registry", response_model=Registry)
def registry() -> Registry:
    """Every registered name a spec may use (plugins included)."""
    return Registry(
        datasets={n: _first_line(DATASETS.get(n)) for n in DATASETS.names()},
        models={n: _first_line(MODELS.get(n)) for n in MODELS.names()},
        parameters=sorted(KNOWN_PARAMS), stages=list(ORDER),
        samplers={"coarse": list(get_args(CoarseStage.model_fields["sampler"].annotation)),
                  "refine": list(get_args(RefineStage.model_fields["sampler"].annotation))},
        pruners=list(get_args(RefineStage.model_fields["pruner"].annotation)))
