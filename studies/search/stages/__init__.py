"""The staged protocol: each stage is a small class registered in STAGES, in order."""

from stagetune.studies.search.stages import _coarse, _confirm, _data_check, _probes, _refine  # noqa: F401  (fill the registry)
from stagetune.studies.search.stages._base import (
    STAGES,
    VERDICTS,
    Stage,
    StageContext,
    StageOutcome,
    register_stage,
)

ORDER = ("data_check", "baseline", "init_check", "overfit", "lr_probe", "coarse", "refine",
         "confirm")

__all__ = ["ORDER", "STAGES", "VERDICTS", "Stage", "StageContext", "StageOutcome",
           "register_stage"]
