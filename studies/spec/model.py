"""The study spec: one Pydantic model, loadable from YAML or JSON.

Every rule a user can break has a message that names the field and says what is
allowed; `load_spec` turns pydantic's errors into one SpecError listing them all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stagetune.studies.errors import SpecError
from stagetune.studies.spec.text import parse_spec_text, shape_problems
from stagetune.workers.config import describe_validation_error
from stagetune.workers.request import Task

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
MAX_TRIALS, MAX_EPOCHS = 10_000, 1_000
# Optuna's samplers and scikit-learn take seeds below 2**32; trial seeds (seed + trial
# number) only reach torch, which takes 64 bits, and numpy, modulo 2**32
MAX_SEED = 2**32 - 1
RESOURCE_UNIT = 1e-4  # the smallest amount of a resource Ray tells apart


FROM_STORE = {"from_store": True}  # validation context of a spec read back from the store


def from_store(info: ValidationInfo) -> bool:
    """Whether a validator checks a spec read back from the store. The spec passed every
    check when it was submitted; checks that need the registries (and so torch) skip it,
    so a runner imports no torch."""
    return bool(info.context and info.context.get("from_store"))


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


METRIC_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
MAX_OBJECTIVES = 3  # Optuna draws a front of two or three
# What a trial measures besides the metrics it reports, each better lower: the model's
# parameter count, and the seconds an epoch took on the trial's device.
MEASURES = {"params": "minimize", "epoch_seconds": "minimize"}
# The built-in metrics' directions, known without asking a worker; any other objective's
# direction comes from the spec, or from a trial worker (workers.objective).
DIRECTIONS = {"val_accuracy": "maximize", "val_loss": "minimize", "val_rmse": "minimize",
              "train_loss": "minimize", "val_top5_accuracy": "maximize",
              "val_macro_f1": "maximize", "val_auroc": "maximize", "val_mae": "minimize",
              "val_r2": "maximize"}


def known_direction(metric: str) -> str | None:
    """A measure's or built-in metric's direction, known without asking a worker (a loss
    minimises); None where only a worker knows (a trainer's or a plugin's metric)."""
    return MEASURES.get(metric) or DIRECTIONS.get(metric) or \
        ("minimize" if metric.endswith("_loss") else None)


class TaskSpec(_Strict):
    """What is trained on what. With a `trainer` (the user's own training function) the
    model and the dataset are optional: the trainer may build and load its own."""

    dataset: str | None = None
    model: str | None = None
    trainer: str | None = None
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    model_options: dict[str, Any] = Field(default_factory=dict)
    loss: str | None = None  # a registered loss; default: the dataset's, else by its kind
    metrics: list[Annotated[str, Field(pattern=METRIC_PATTERN)]] = Field(
        default_factory=list, max_length=32)  # reported besides the dataset's own
    objective: str | None = Field(None, pattern=METRIC_PATTERN)  # any metric a run reports
    direction: Literal["maximize", "minimize"] | None = None  # default: from the metric
    # Two or three objectives at once: the first is the objective, each other one params
    # (the model's parameter count), epoch_seconds or a metric the task reports; refine and
    # confirm keep the front of configurations no other beats on all of them.
    objectives: list[Annotated[str, Field(pattern=METRIC_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_OBJECTIVES)

    @field_validator("dataset")
    @classmethod
    def _registered_dataset(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is not None and not from_store(info):
            from stagetune.workers.data import DATASETS  # the registries import torch: not in a runner

            DATASETS.get(name)  # raises with the registered names
        return name

    @field_validator("model")
    @classmethod
    def _registered_model(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is not None and not from_store(info):
            from stagetune.workers.models import MODELS

            MODELS.get(name)
        return name

    @field_validator("trainer")
    @classmethod
    def _registered_trainer(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is not None and not from_store(info):
            from stagetune.workers.trainers import TRAINERS

            TRAINERS.get(name)
        return name

    @field_validator("loss")
    @classmethod
    def _registered_loss(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is not None and not from_store(info):
            from stagetune.workers.losses import LOSSES

            LOSSES.get(name)
        return name

    @field_validator("metrics")
    @classmethod
    def _registered_metrics(cls, names: list[str], info: ValidationInfo) -> list[str]:
        if names and not from_store(info):
            from stagetune.workers.metrics import METRICS

            for name in names:
                METRICS.get(name)
        return names

    def as_task(self) -> Task:
        """The workers' view of this task."""
        return Task(self.dataset, self.model, dict(self.dataset_options),
                    dict(self.model_options), trainer=self.trainer, loss=self.loss,
                    metrics=tuple(self.metrics))

    @property
    def main_objective(self) -> str | None:
        """The objective a study is judged by first: `objective`, else the first of
        `objectives`, else None (the task's default)."""
        return self.objective or (self.objectives[0] if self.objectives else None)

    @field_validator("objectives")
    @classmethod
    def _several_objectives(cls, names: list[str]) -> list[str]:
        if names and (len(names) < 2 or len(set(names)) < len(names)):
            raise ValueError("give two or three different names (the first is the objective; "
                             "one objective goes in task.objective)")
        if names and names[0] in MEASURES:
            raise ValueError(f"'{names[0]}' cannot come first: the first is a metric the runs "
                             "report, which coarse ranks and prunes by")
        return names

    @model_validator(mode="after")
    def _objectives_agree(self) -> TaskSpec:
        if self.objectives and self.objective not in (None, self.objectives[0]):
            raise ValueError(f"objectives starts with '{self.objectives[0]}' but objective is "
                             f"'{self.objective}': the first of objectives is the objective")
        return self

    @model_validator(mode="after")
    def _something_to_train(self) -> TaskSpec:
        if self.trainer is None and (self.dataset is None or self.model is None):
            missing = " and ".join(f for f in ("dataset", "model") if getattr(self, f) is None)
            raise ValueError(f"give a {missing} (or a trainer, which may bring its own)")
        return self


Trials = Annotated[int, Field(ge=1, le=MAX_TRIALS)]
Epochs = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]


class DataCheckStage(_Strict):
    """Sample-based checks of the splits before any training (workers.data_check). Exact
    copies of validation samples in training above `leak_share` of validation fail it,
    and stop the study; `allow_leaks` turns that failure into a warning."""

    enabled: bool = True
    allow_leaks: bool = False
    leak_share: float = Field(0.01, ge=0, le=1)
    samples: int = Field(20_000, ge=100, le=1_000_000)  # read per split at most


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
    diagnose: bool = True  # stop hopeless trials on their vital signs (studies.search.loop)
    # start the first configurations beside the probes (studies.search.stages._early)
    early: bool = True


class RefineStage(_Strict):
    """Bayesian search on the whole declared space with the narrowed region as a prior:
    the best coarse runs continue from their checkpoints, new ones are pruned by ASHA."""

    enabled: bool = True
    trials: Trials = 24
    epochs: Epochs = 10  # a full trial's length (E): every trial's schedule spans it
    sampler: Literal["tpe", "gp", "cmaes"] = "tpe"
    pruner: Literal["asha", "hyperband", "median", "none"] = "asha"
    warm_start: int = Field(3, ge=0, le=1000)  # coarse survivors continued
    explore: float = Field(0.25, ge=0, le=1)  # share of proposals drawn from the whole space
    patience: int = Field(0, ge=0, le=10_000)  # stop after this many trials without a new best
    diagnose: bool = True  # stop hopeless trials on their vital signs (studies.search.loop)


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
    data_check: DataCheckStage = DataCheckStage()
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
    # a finished study of the store on the same task: its LR ranges and its trials are
    # where this one starts (studies.search.warm_start)
    warm_start_from: str | None = Field(None, pattern=NAME_PATTERN)

    def to_store(self) -> dict[str, Any]:
        """The spec as the store keeps it: what the user wrote, no default filled in. The
        plan reads a stage's fields as the user's own only where they were set
        (`studies.planning.plan`); a stored default would read back as set, and override
        the planner with the defaults' sizes."""
        return self.model_dump(mode="json", exclude_unset=True)

    @field_validator("goal")
    @classmethod
    def _finite_goal(cls, goal: float | None) -> float | None:
        if goal is not None and not math.isfinite(goal):
            raise ValueError("goal must be a finite number")
        return goal


PARAM_TYPES: dict[Any, type[BaseModel]] = {"float": FloatParam, "int": IntParam,
                                            "categorical": CategoricalParam}


def variants(entry: Param | list[Param]) -> list[Param]:
    """A space entry's variants: one for a plain parameter."""
    return list(entry) if isinstance(entry, list) else [entry]


def load_spec(source: str | Path | dict[str, Any], *, worker_checks: bool = True) -> StudySpec:
    """Read a spec from a YAML/JSON file path or a dict, and check that it can run (the
    workers' checks, without loading data); raise SpecError listing every problem.
    `worker_checks=False` checks its schema only, leaving out what needs the workers'
    registries (and so torch): registered names, knob values, dataset options, the budget."""
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist")
        try:
            data = parse_spec_text(path.read_text())  # YAML is a superset of JSON
        except SpecError as exc:
            raise SpecError(f"{path}: {exc}".replace("the body is not valid YAML",
                                                     "not valid YAML or JSON"),
                            exc.problems) from None
        if not isinstance(data, dict):
            raise SpecError(f"{path} must hold a mapping with name, task, space, ...")
    _raise_if(shape_problems(data))  # before pydantic walks it: nesting, NaN, Infinity
    if not worker_checks:
        return _validated(data, FROM_STORE)
    spec = _validated(data)
    from stagetune.studies.spec.checks import spec_problems  # it reads this module's models

    _raise_if(spec_problems(spec))
    return spec


def _raise_if(problems: list[tuple[str, str]]) -> None:
    if problems:
        raise SpecError("; ".join(f"{w}: {m}" if w else m for w, m in problems), problems)


def same_spec(stored: dict[str, Any], given: dict[str, Any]) -> bool:
    """Whether two specs say the same, each read with today's defaults: a spec stored by
    an older version lacks the fields added since (a new stage, new task fields), and
    still resumes."""
    if stored == given:
        return True
    try:
        return stored_spec(stored).model_dump(mode="json") == \
            stored_spec(given).model_dump(mode="json")
    except SpecError:  # one no longer validates: it is not the same
        return False


def stored_spec(data: dict[str, Any]) -> StudySpec:
    """A spec as the store keeps it: checked in full when it was submitted, so checks that
    need the registries are skipped (a runner reads it, and imports no torch)."""
    return _validated(data, FROM_STORE)


def _validated(data: dict[str, Any], context: dict[str, Any] | None = None) -> StudySpec:
    try:
        return StudySpec.model_validate(data, context=context)
    except ValidationError as exc:
        _raise_if(_describe(exc))
        raise  # pydantic raises with at least one error


def _describe(exc: ValidationError) -> list[tuple[str, str]]:
    """Pydantic's messages as (field path, message), with the ones it words poorly for a
    spec author rewritten."""
    lines: list[tuple[str, str]] = []
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
            lines.append((where, f"unknown field; allowed here: {', '.join(allowed)}"))
        elif err["type"] == "string_pattern_mismatch" and where == "name":
            lines.append(("name", "use letters, digits, '-' and '_' (up to 64, not starting "
                                  f"with '-' or '_') (got {str(err['input'])[:80]!r})"))
        else:
            one = ValidationError.from_exception_data(exc.title, [{**err, "loc": loc}])  # type: ignore[list-item, typeddict-unknown-key]
            text = describe_validation_error(one)
            lines.append((where, text.removeprefix(f"{where or 'value'}: ")))
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
    """The fields of the model at `loc` in the spec (an optional section's too:
    `budget: Budget | None`)."""
    model: Any = StudySpec
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = next((a for a in (field.annotation, *get_args(field.annotation))
                      if hasattr(a, "model_fields")), None)
    return sorted(getattr(model, "model_fields", {}))
