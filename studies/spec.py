"""The study spec: one Pydantic model, loadable from YAML or JSON.

Every rule a user can break has a message that names the field and says what is
allowed; `load_spec` turns pydantic's errors into one SpecError listing them all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workers.config import KNOWN_PARAMS, describe_validation_error, parse_params
from workers.data import DATASETS
from workers.errors import StagetuneError
from workers.models import MODELS

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
MAX_TRIALS, MAX_EPOCHS = 10_000, 1_000
OBJECTIVES = ("val_accuracy", "val_loss", "val_rmse")
RESOURCE_UNIT = 1e-4  # the smallest amount of a resource Ray tells apart


class SpecError(StagetuneError, ValueError):
    """A study spec breaks a rule; the message lists every problem, and `problems` holds
    them one by one as (field path, what is wrong)."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [("", message)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatParam(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log)
        return self


class IntParam(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> IntParam:
        _check_bounds(self.low, self.high, self.log)
        return self


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[str | int | float | bool] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: list[Any]) -> list[Any]:
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise ValueError("choices must be distinct")
        return choices


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def _check_bounds(low: float, high: float, log: bool) -> None:
    if low >= high:
        raise ValueError(f"low must be below high (got low={low}, high={high})")
    if log and low <= 0:
        raise ValueError(f"a log scale needs low > 0 (got low={low})")


class TaskSpec(_Strict):
    dataset: str
    model: str
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    model_options: dict[str, Any] = Field(default_factory=dict)
    objective: Literal["val_accuracy", "val_loss", "val_rmse"] | None = None

    @field_validator("dataset")
    @classmethod
    def _registered_dataset(cls, name: str) -> str:
        DATASETS.get(name)  # raises with the registered names
        return name

    @field_validator("model")
    @classmethod
    def _registered_model(cls, name: str) -> str:
        MODELS.get(name)
        return name


Trials = Annotated[int, Field(ge=1, le=MAX_TRIALS)]
Epochs = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]


class BaselineStage(_Strict):
    enabled: bool = True


class InitCheckStage(_Strict):
    enabled: bool = True
    batches: int = Field(4, ge=1, le=100)


class OverfitStage(_Strict):
    enabled: bool = True
    samples: int = Field(64, ge=2, le=10_000)
    steps: int = Field(300, ge=1, le=100_000)


class LrProbeStage(_Strict):
    enabled: bool = True
    iterations: int = Field(100, ge=10, le=10_000)


class CoarseStage(_Strict):
    enabled: bool = True
    trials: Trials = 32
    epochs: Epochs = 2
    sampler: Literal["qmc", "random"] = "qmc"


class RefineStage(_Strict):
    enabled: bool = True
    trials: Trials = 24
    epochs: Epochs = 10
    sampler: Literal["tpe", "gp"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    warm_start: int = Field(5, ge=0, le=1000)


class ConfirmStage(_Strict):
    enabled: bool = True
    top: int = Field(3, ge=1, le=100)
    seeds: int = Field(3, ge=1, le=100)
    epochs: Epochs | None = None  # default: the refine stage's budget


class Stages(_Strict):
    baseline: BaselineStage = BaselineStage()
    init_check: InitCheckStage = InitCheckStage()
    overfit: OverfitStage = OverfitStage()
    lr_probe: LrProbeStage = LrProbeStage()
    coarse: CoarseStage = CoarseStage()
    refine: RefineStage = RefineStage()
    confirm: ConfirmStage = ConfirmStage()
    continue_on_failure: bool = False  # go on past a failed gate


class Resources(_Strict):
    gpus_per_trial: float = Field(0.0, ge=0, le=64)
    cpus_per_trial: float = Field(1.0, gt=0, le=256)
    max_concurrent: int = Field(4, ge=1, le=1024)
    max_retries: int = Field(2, ge=0, le=10)  # a trial lost with its worker or node
    # Ray custom resources each trial needs: {"a100": 1} keeps trials on the nodes started
    # with `--resources '{"a100": 8}'`
    custom: dict[str, float] = Field(default_factory=dict)

    @field_validator("custom")
    @classmethod
    def _check_custom(cls, custom: dict[str, float]) -> dict[str, float]:
        for name, amount in custom.items():
            if not name.strip():
                raise ValueError("a custom resource needs a name")
            if name in ("CPU", "GPU"):
                raise ValueError(f"'{name}' is not a custom resource; use cpus_per_trial "
                                 "or gpus_per_trial")
            # Ray counts resources in units of 0.0001
            if not (math.isfinite(amount) and amount >= RESOURCE_UNIT):
                raise ValueError(f"'{name}' needs an amount of at least {RESOURCE_UNIT} "
                                 f"(got {amount})")
        return custom


class StudySpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    task: TaskSpec
    space: dict[str, Param] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)
    stages: Stages = Stages()
    resources: Resources = Resources()
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check_names(self) -> StudySpec:
        problems = []
        for where, names in (("space", self.space), ("fixed", self.fixed),
                             ("task.model_options", self.task.model_options)):
            unknown = sorted(set(names) - set(KNOWN_PARAMS))
            if unknown:
                problems.append(f"{where}: unknown parameter {', '.join(map(repr, unknown))}; "
                                f"known: {', '.join(KNOWN_PARAMS)}")
        both = sorted(set(self.space) & set(self.fixed))
        if both:
            problems.append(f"{', '.join(map(repr, both))} is both in space and fixed; "
                            "keep it in one of them")
        if problems:
            raise ValueError("; ".join(problems))
        try:
            parse_params({**self.task.model_options, **self.fixed})  # values of fixed knobs
        except StagetuneError as exc:
            raise ValueError(f"fixed: {exc}") from None
        return self


def load_spec(source: str | Path | dict[str, Any]) -> StudySpec:
    """Read a spec from a YAML/JSON file path or a dict; raise SpecError listing every problem."""
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
        except yaml.YAMLError as exc:
            raise SpecError(f"{path} is not valid YAML or JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SpecError(f"{path} must hold a mapping with name, task, space, ...")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        lines = _describe(exc)
        problems = [(where, what) for where, _, what in (line.partition(": ") for line in lines)]
        raise SpecError("; ".join(lines), problems) from None


def _describe(exc: ValidationError) -> list[str]:
    """Pydantic's messages, with the two it words poorly for a spec author rewritten."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p not in ("float", "int", "categorical"))
        if err["type"] == "extra_forbidden":
            allowed = _fields_at(err["loc"][:-1])
            lines.append(f"{where}: unknown field; allowed here: {', '.join(allowed)}")
        elif err["type"] == "string_pattern_mismatch" and where == "name":
            lines.append("name: use letters, digits, '-' and '_' (up to 64, not starting with "
                         f"'-' or '_') (got {err['input']!r})")
        else:
            one = ValidationError.from_exception_data(exc.title, [err])  # type: ignore[list-item]
            line = describe_validation_error(one)
            lines.append(line.removeprefix("value: ").replace(".float:", ":")
                         .replace(".int:", ":").replace(".categorical", ""))
    return lines


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    model: Any = StudySpec
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return sorted(getattr(model, "model_fields", {}))
