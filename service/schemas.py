"""The API's response shapes: what OpenAPI documents and what every reply conforms to."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")
StudyStatus = Literal["pending", "running", "cancelling", "completed", "stopped", "cancelled",
                      "failed"]
TrialState = Literal["running", "complete", "pruned", "failed", "waiting"]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


class StudySummary(BaseModel):
    id: str
    status: StudyStatus
    message: str
    current_stage: str | None
    best_value: float | None
    baseline: float | None
    trials: dict[str, int]  # across the search stages, by state
    created_at: datetime | None
    updated_at: datetime | None


class Fix(BaseModel):
    """A suggested spec edit: the knobs to set (a value, or bounds such as
    {"high": 1e-3}), why, and the case it is for (e.g. {"optimizer": "sgd"})."""

    set: dict[str, Any]
    why: str = ""
    when: dict[str, Any] | None = None


class StageOut(BaseModel):
    name: str
    status: str
    verdict: str | None
    message: str
    epochs: float
    seconds: float
    started_at: datetime | None
    finished_at: datetime | None
    trials: dict[str, int] | None = None
    planned: dict[str, Any] | None = None  # the plan's share: epochs, seconds, sizes
    trial_seconds: float = 0.0  # its trials' own run time, summed
    rungs: list[dict[str, Any]] | None = None  # coarse: per rung, trials reached and promoted
    fixes: list[Fix] = []  # spec edits a person can apply, from the stage's findings


class Best(BaseModel):
    params: dict[str, Any]
    value: float | None
    stage: str | None


class StudyDetail(StudySummary):
    spec: dict[str, Any]
    stages: list[StageOut]
    best: Best | None
    diagnosis: dict[str, Any] | None
    weights: dict[str, Any] | None
    compute: dict[str, float]
    budget: dict[str, dict[str, float]] | None = None  # per unit: budget, planned, spent


class TrialOut(BaseModel):
    number: int
    stage: str
    stage_number: int
    state: TrialState
    status: str | None
    reason: str | None
    value: float | None
    params: dict[str, Any]
    epochs: int | None
    restarts: int
    interrupted: int = 0  # times its runner stopped while it ran; it went on each time
    worker: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    rungs: list[int] = []  # successive-halving rungs it passed
    continues: int | None = None  # the coarse trial (its stage number) it continued
    started_after: int | None = None  # the checkpoint's epoch it continued after
    drawn_from: str | None = None  # refine: the narrowed region or the whole space
    parameters: int | None = None  # the model's parameter count
    seconds: float | None = None  # its run time
    objectives: dict[str, float] | None = None  # every objective's value, where there are several


class Objective(BaseModel):
    name: str
    direction: Literal["maximize", "minimize"] | None  # None: known once refine has finished


class FrontPoint(BaseModel):
    """A refine trial on the front: its parameters and its value of every objective."""

    trial: int
    params: dict[str, Any]
    values: dict[str, float]


class ConfirmedPoint(BaseModel):
    """A confirmed configuration on the front: each objective's mean and spread over its
    seeds, and where to download its best run's weights."""

    config: int
    params: dict[str, Any]
    seeds: int
    means: dict[str, float]
    std: dict[str, float]
    model_url: str


class Front(BaseModel):
    """The configurations no other beats on every objective, best first by the first."""

    objectives: list[Objective]
    refine: list[FrontPoint]
    confirmed: list[ConfirmedPoint]
    note: str = ""


class TrialDetail(TrialOut):
    curves: list[dict[str, Any]]


class Knob(BaseModel):
    """A declared knob: what a spec may set it to."""

    name: str
    type: str
    default: Any = None
    required: bool = False
    bounds: dict[str, float] = {}  # ge, gt, le, lt, as pydantic declares them
    choices: list[Any] | None = None
    description: str = ""


class RegistryEntry(BaseModel):
    description: str  # the first line of its docstring
    knobs: list[Knob]  # its own knobs, beside the built-in ones (`parameters`)
    declares: dict[str, Any] = {}  # a dataset's loss and metrics, a metric's direction, ...


class Registry(BaseModel):
    datasets: dict[str, RegistryEntry]
    models: dict[str, RegistryEntry]
    trainers: dict[str, RegistryEntry]
    losses: dict[str, RegistryEntry]
    metrics: dict[str, RegistryEntry]
    parameters: list[str]  # the built-in knobs every model and trainer takes
    stages: list[str]
    samplers: dict[str, list[str]]
    pruners: list[str]


class PlotInfo(BaseModel):
    kind: str
    title: str
    section: str
    caption: str
    per_trial: bool
    url: str


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


class Message(BaseModel):
    detail: str


class Extension(BaseModel):
    """More budget for a completed or stopped study: refine goes on, then confirm again."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(ge=1, le=1_000_000, description="epochs more for refine and confirm")
    seconds: float | None = Field(None, gt=0, le=10_000_000, description=(
        "seconds more, for a study whose budget limits seconds too"))


class Problem(BaseModel):
    loc: list[str | int]  # where: "body", then the field's path
    msg: str  # what is wrong, and what is allowed
    type: str


class ValidationErrors(BaseModel):
    """A 422, shaped as FastAPI's own: one entry per problem."""

    detail: list[Problem]
