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
MAX_SEED = 2**31 - 1  # numpy seeds and trial seeds (seed + trial number) stay in range
RESOURCE_UNIT = 1e-4  # the smallest amount of a resource Ray tells apart


class SpecError(StagetuneError, ValueError):
    """A study spec breaks a rule; the message lists every problem, and `problems` holds
    them one by one as (field path, what is wrong)."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [("", message)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Choice = str | int | float | bool
# A condition: the parameter is drawn only when each named categorical parameter takes one
# of the listed values, e.g. `when: {optimizer: [sgd, sgd_nesterov]}`.
Condition = dict[str, list[Choice]]


class _Conditional(_Strict):
    when: Condition | None = None

    @field_validator("when", mode="before")
    @classmethod
    def _listed(cls, when: Any) -> Any:
        if isinstance(when, dict):  # `when: {optimizer: sgd}` is shorthand for a one-item list
            return {k: v if isinstance(v, list) else [v] for k, v in when.items()}
        return when

    @field_validator("when")
    @classmethod
    def _not_empty(cls, when: Condition | None) -> Condition | None:
        if when is not None and (not when or not all(when.values())):
            raise ValueError("a condition names at least one parameter and one value of it")
        return when


class FloatParam(_Conditional):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log)
        return self


class IntParam(_Conditional):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> IntParam:
        _check_bounds(self.low, self.high, self.log)
        return self


class CategoricalParam(_Conditional):
    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1, max_length=1000)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: list[Any]) -> list[Any]:
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise ValueError("choices must be distinct")
        return choices


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
# A space entry: one parameter, or variants of it under disjoint conditions (lr per optimizer).
Entry = Param | Annotated[list[Param], Field(min_length=1, max_length=32)]


def _check_bounds(low: float, high: float, log: bool) -> None:
    if low >= high:
        raise ValueError(f"low must be below high (got low={low}, high={high})")
    if log and low <= 0:
        raise ValueError(f"a log scale needs low > 0 (got low={low})")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"low and high must be finite numbers (got low={low}, high={high})")


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
    """Successive halving (ASHA) over quasi-random configurations: trials start with a
    1-epoch rung, the best 1/`reduction` go on to the next rung, up to `epochs`."""

    enabled: bool = True
    trials: Trials = 32  # configurations tried; with a budget the plan sizes it
    epochs: Epochs | None = None  # the last coarse rung; default: the largest rung <= E/reduction
    sampler: Literal["qmc", "random"] = "qmc"
    reduction: int = Field(3, ge=2, le=10)
    widen: bool = False  # may narrowing extend a range past the declared one?


class RefineStage(_Strict):
    """Bayesian search on the whole declared space with the narrowed region as a prior:
    the best coarse runs continue from their checkpoints, new ones are pruned by ASHA."""

    enabled: bool = True
    trials: Trials = 24
    epochs: Epochs = 10  # a full trial's length (E): every trial's schedule spans it
    sampler: Literal["tpe", "gp"] = "tpe"
    pruner: Literal["asha", "hyperband", "median", "none"] = "asha"
    warm_start: int = Field(3, ge=0, le=1000)  # coarse survivors continued
    explore: float = Field(0.25, ge=0, le=1)  # share of proposals drawn from the whole space
    patience: int = Field(0, ge=0, le=10_000)  # stop after this many trials without a new best


class ConfirmStage(_Strict):
    enabled: bool = True
    top: int = Field(3, ge=1, le=100)
    seeds: int = Field(3, ge=1, le=100)
    epochs: Epochs | None = None  # default: the refine stage's budget
    share: float = Field(0.15, gt=0, le=1)  # at most this share of a study's budget


class Budget(_Strict):
    """What a study may spend: epochs (probes counted by the samples they see), and/or
    trial-seconds (each trial's wall time, summed). The plan sizes the stages from it."""

    epochs: float | None = Field(None, ge=5, le=1_000_000)
    seconds: float | None = Field(None, ge=1, le=1e9)

    @model_validator(mode="after")
    def _something(self) -> Budget:
        if self.epochs is None and self.seconds is None:
            raise ValueError("give epochs, seconds or both")
        return self


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
    space: dict[str, Entry] = Field(default_factory=dict, max_length=200)
    fixed: dict[str, Any] = Field(default_factory=dict)
    stages: Stages = Stages()
    resources: Resources = Resources()
    budget: Budget | None = None
    goal: float | None = None  # stop once the confirmed objective reaches it
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @field_validator("goal")
    @classmethod
    def _finite_goal(cls, goal: float | None) -> float | None:
        if goal is not None and not math.isfinite(goal):
            raise ValueError("goal must be a finite number")
        return goal

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
        problems += condition_problems(self.space)
        if problems:
            raise ValueError("; ".join(problems))
        try:
            parse_params({**self.task.model_options, **self.fixed})  # values of fixed knobs
        except StagetuneError as exc:
            raise ValueError(f"fixed: {exc}") from None
        return self


PARAM_TYPES: dict[Any, type[BaseModel]] = {"float": FloatParam, "int": IntParam,
                                            "categorical": CategoricalParam}


def variants(entry: Param | list[Param]) -> list[Param]:
    """A space entry's variants: one for a plain parameter."""
    return list(entry) if isinstance(entry, list) else [entry]


def condition_problems(space: dict[str, Any]) -> list[str]:
    """What is wrong with the space's conditions: each names an unconditional categorical
    parameter of the space and some of its choices, and variants of a name never overlap."""
    switches = {n: e.choices for n, e in space.items()
                if isinstance(e, CategoricalParam) and e.when is None}
    problems = []
    for name, entry in space.items():
        options = variants(entry)
        for i, param in enumerate(options):
            where = f"space.{name}" + (f".{i}" if len(options) > 1 else "")
            if param.when is None:
                if len(options) > 1:
                    problems.append(f"{where}: each variant of a parameter needs a 'when' "
                                    "condition saying when it applies")
                continue
            for key, values in param.when.items():
                if key not in switches or key == name:
                    problems.append(f"{where}.when: '{key}' is not an unconditional categorical "
                                    f"parameter of the space; conditions may name: "
                                    f"{', '.join(sorted(set(switches) - {name})) or 'none'}")
                    continue
                wrong = [v for v in values if v not in switches[key]]
                if wrong:
                    problems.append(f"{where}.when.{key}: {', '.join(map(repr, wrong))} is not "
                                    f"one of {key}'s choices ({', '.join(map(str, switches[key]))})")
        problems += _overlaps(name, options)
    return problems


def _overlaps(name: str, options: list[Param]) -> list[str]:
    """Two variants overlap when some assignment of the switches satisfies both."""
    out = []
    for i in range(len(options)):
        for j in range(i + 1, len(options)):
            a, b = options[i].when or {}, options[j].when or {}
            shared = {k: [v for v in a[k] if v in b[k]] for k in set(a) & set(b)}
            if all(shared.values()):
                both = ", ".join(f"{k}={v[0]}" for k, v in sorted(shared.items())) or "always"
                out.append(f"space.{name}: variants {i} and {j} both apply ({both}); give each "
                           "variant values of its own")
    return out


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
    """Pydantic's messages, with the ones it words poorly for a spec author rewritten."""
    lines = []
    for err in exc.errors():
        raw = err["loc"]
        branch = next((str(p) for p in raw if _is_union_tag(p)), None)  # "a parameter, or variants"
        if branch is not None and _other_branch(branch, err):
            continue
        tag = next((p for p in raw if p in PARAM_TYPES), None)
        loc = tuple(p for p in raw if p not in PARAM_TYPES and not _is_union_tag(p))
        where = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            allowed = sorted(PARAM_TYPES[tag].model_fields) if tag else _fields_at(loc[:-1])
            lines.append(f"{where}: unknown field; allowed here: {', '.join(allowed)}")
        elif err["type"] == "string_pattern_mismatch" and where == "name":
            lines.append("name: use letters, digits, '-' and '_' (up to 64, not starting with "
                         f"'-' or '_') (got {err['input']!r})")
        else:
            one = ValidationError.from_exception_data(exc.title, [{**err, "loc": loc}])  # type: ignore[list-item, typeddict-unknown-key]
            lines.append(describe_validation_error(one).removeprefix("value: "))
    return lines


def _other_branch(branch: str, err: Any) -> bool:
    """An error of the union branch the input was not meant for: a mapping is one parameter,
    a list is variants; anything else gets only the mapping branch's error."""
    is_list_branch = branch.startswith("list[")
    if err["type"] in ("list_type", "model_attributes_type", "model_type", "dict_type") \
            and branch == err["loc"][-1]:
        return is_list_branch if not isinstance(err["input"], list) else not is_list_branch
    return False


def _is_union_tag(part: Any) -> bool:
    """pydantic's names for the branches of a union (`list[...]`, `tagged-union[...]`)."""
    return isinstance(part, str) and ("union[" in part or part.startswith(("list[", "function-")))


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    model: Any = StudySpec
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return sorted(getattr(model, "model_fields", {}))
