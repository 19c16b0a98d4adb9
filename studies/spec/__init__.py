"""The study spec and its checks: the model (`model`), reading untrusted text (`text`),
the submit-time checks (`checks`), the search space (`space`) and the JSON Schema
(`schema`). The model's names are re-exported here, as most callers need only them."""

from stagetune.studies.errors import SpecError
from stagetune.studies.spec.model import (
    DIRECTIONS,
    MEASURES,
    NAME_PATTERN,
    RESOURCE_UNIT,
    Budget,
    CategoricalParam,
    CoarseStage,
    FloatParam,
    IntParam,
    Param,
    RefineStage,
    Resources,
    StudySpec,
    known_direction,
    load_spec,
    same_spec,
    stored_spec,
    variants,
)

__all__ = ["DIRECTIONS", "MEASURES", "NAME_PATTERN", "RESOURCE_UNIT", "Budget", "CategoricalParam",
           "CoarseStage", "FloatParam", "IntParam", "Param", "RefineStage", "Resources",
           "SpecError", "StudySpec", "load_spec", "known_direction", "same_spec", "stored_spec", "variants"]
