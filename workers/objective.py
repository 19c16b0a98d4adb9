"""What a run of a task is judged by: its loss, the metrics it reports, its objective.

The task names them first (`Task.loss`, `Task.metrics`), then its dataset's registration
(`register_dataset(..., loss=, metrics=, expected_loss=)`), then the task kind:
cross-entropy and accuracy for classification, BCE and accuracy for multi-label, MSE and
RMSE for regression. Names come without loading data where the loss or metrics settle
the kind; otherwise the kind is the dataset's, which `task_kind` loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stagetune.workers.errors import ConfigError
from stagetune.workers.request import Task

if TYPE_CHECKING:
    from stagetune.workers.data import AnyDataset

KINDS = ("classification", "multilabel", "regression")
DIRECTIONS = ("maximize", "minimize")
# What the built-in loop reports besides val_loss and the val_<metric>s, by kind.
TRAIN_METRICS = {"classification": ("train_loss", "train_accuracy"),
                 "multilabel": ("train_loss",), "regression": ("train_loss",)}
DIRECTION_OF = {"train_accuracy": "maximize"}  # reported by the loop, not a registered metric


@dataclass(frozen=True)
class Scoring:
    """How one run is scored: the loss it trains with (a LOSSES name), the metrics it
    reports as `val_<name>` (METRICS names), and the objective with its direction."""

    loss: str
    metrics: tuple[str, ...]
    objective: str
    direction: str


def scoring_for(task: Task | None, data: AnyDataset, objective: str | None = None,
                direction: str | None = None) -> Scoring:
    """The run's scoring on loaded `data` (task None: the dataset's own and its kind's);
    a ConfigError when the loss, a metric or the objective does not fit the data."""
    from stagetune.workers.losses import check_loss_kind
    from stagetune.workers.metrics import check_metric_kind

    task = task or Task(data.name, None)
    loss = _loss(task, data.task)
    check_loss_kind(loss, data.task, data.name)
    metrics = _metric_names(task, data.task)
    for name in metrics:
        check_metric_kind(name, data.task, data.name)
    if objective is None:
        objective, direction = objective_for(task, None, direction, kind=data.task)
    reported = _reported(metrics, data.task)
    if objective not in reported:
        raise ConfigError(f"objective '{objective}' is not a metric this run reports; it "
                          f"reports {', '.join(reported)} (add a metric to task.metrics)")
    return Scoring(loss, metrics, objective, direction or direction_of(task, objective))


def task_kind(task: Task) -> str:
    """The task's kind: settled by its loss or metrics where they apply to one kind only,
    else the dataset's (loaded, and cached, for it)."""
    kinds = task_kinds(task)
    if len(kinds) == 1:
        return kinds[0]
    from stagetune.workers.data import load_dataset
    from stagetune.workers.knobs import parse_task_params

    if task.dataset is None:
        raise ConfigError("the task names no dataset, so its kind is unknown")
    return load_dataset(task.dataset, parse_task_params(task, {}).dataset_options).task


def task_kinds(task: Task) -> tuple[str, ...]:
    """The kinds the task's loss and metrics allow, without loading data; a ConfigError
    when none does (say, mse with accuracy)."""
    from stagetune.workers.losses import LOSSES
    from stagetune.workers.metrics import METRICS

    kinds = set(KINDS)
    loss = _declared_loss(task)
    named = [(f"loss '{loss}'", LOSSES.entry(loss).info.get("kinds"))] if loss else []
    named += [(f"metric '{m}'", METRICS.entry(m).info.get("kinds"))
              for m in _declared_metrics(task)]
    for _, allowed in named:
        if allowed is not None:
            kinds &= set(allowed)
    if not kinds:
        said = "; ".join(f"{what} applies to {', '.join(a or KINDS)}" for what, a in named)
        raise ConfigError(f"the task's loss and metrics fit no task kind: {said}")
    return tuple(k for k in KINDS if k in kinds)


def task_metrics(task: Task, kind: str | None = None) -> tuple[str, ...]:
    """Every metric name a run of `task` reports (train_loss, val_loss, val_<metric>, ...).

    Without `kind` and where the loss and metrics leave it open, the names for every kind
    they allow: a superset (digits lists val_rmse, which the run refuses as an objective).
    A task with a trainer: the names its trainer declares (it may report more)."""
    if task.trainer is not None:
        info = _trainer_info(task)
        declared = [*info.get("metrics", ()), info.get("objective")]
        return tuple(dict.fromkeys(n for n in declared if n))
    names: list[str] = []
    for k in [kind] if kind else task_kinds(task):
        names += _reported(_metric_names(task, k), k)
    return tuple(dict.fromkeys(names))


def objective_for(task: Task, objective: str | None = None, direction: str | None = None,
                  *, kind: str | None = None) -> tuple[str, str]:
    """The objective and its direction: `objective` if given, else the trainer's declared
    one, else the first of the dataset's declared metrics, else by kind (val_accuracy,
    val_rmse: this may load the dataset). `direction` defaults to the metric's own."""
    if objective is None and task.trainer is not None:
        info = _trainer_info(task)
        objective, direction = info.get("objective"), direction or info.get("direction")
        if objective is None and task.dataset is None:  # else: the dataset's default
            raise ConfigError(f"trainer '{task.trainer}' declares no objective: name the "
                              "metric to judge runs by in the spec's task.objective")
    if objective is None:
        declared = _dataset_info(task.dataset).get("metrics", ())
        if declared:
            objective = f"val_{declared[0]}"
        else:
            from stagetune.workers.metrics import DEFAULT_METRIC

            objective = f"val_{DEFAULT_METRIC[kind or task_kind(task)]}"
    if direction is not None and direction not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)} (got {direction!r})")
    return objective, direction or direction_of(task, objective)


def direction_of(task: Task, metric: str) -> str:
    """Whether `metric` is better higher (maximize) or lower (minimize): a loss minimises;
    `val_<name>` follows the registered metric; a trainer's objective its declaration."""
    from stagetune.workers.metrics import METRICS

    if task.trainer is not None:
        info = _trainer_info(task)
        if metric == info.get("objective") and info.get("direction"):
            return str(info["direction"])
    if metric.endswith("_loss"):
        return "minimize"
    if metric in DIRECTION_OF:
        return DIRECTION_OF[metric]
    name = metric.removeprefix("val_")
    if metric.startswith("val_") and name in METRICS:
        return str(METRICS.entry(name).info["direction"])
    raise ConfigError(f"no direction is known for metric '{metric}': registered metrics "
                      f"report as val_<name> ({', '.join(METRICS.names())}) and losses as "
                      "*_loss; give the spec's direction")


def loss_name(data: AnyDataset, loss: str | None = None) -> str:
    """The loss a run on `data` trains with: `loss`, else the dataset's, else the kind's."""
    return _loss(Task(data.name, None, loss=loss), data.task)


def initial_loss(data: AnyDataset, loss: str | None = None) -> tuple[float | None, str]:
    """The loss a model that knows nothing should have, and who says so: the dataset's
    `expected_loss` (when it trains with its own loss), else the loss's `expected`. None
    when neither states one."""
    from stagetune.workers.losses import expected_loss

    name = loss_name(data, loss)
    info = _dataset_info(data.name)
    own = info.get("loss") or None
    stated = info.get("expected_loss")
    if stated is not None and (loss is None or loss == own):
        return float(stated(data)), "dataset"
    return expected_loss(name, data), "loss"


def _declared_loss(task: Task) -> str | None:
    """The task's loss, else its dataset's; None: the kind's default."""
    return task.loss or _dataset_info(task.dataset).get("loss") or None


def _loss(task: Task, kind: str) -> str:
    from stagetune.workers.losses import DEFAULT_LOSS

    return _declared_loss(task) or DEFAULT_LOSS[kind]


def _declared_metrics(task: Task) -> tuple[str, ...]:
    names = (*_dataset_info(task.dataset).get("metrics", ()), *task.metrics)
    return tuple(dict.fromkeys(names))


def _metric_names(task: Task, kind: str) -> tuple[str, ...]:
    """The kind's default metric, then the dataset's, then the task's own."""
    from stagetune.workers.metrics import DEFAULT_METRIC

    return tuple(dict.fromkeys((DEFAULT_METRIC[kind], *_declared_metrics(task))))


def _reported(metrics: tuple[str, ...], kind: str) -> tuple[str, ...]:
    return (*TRAIN_METRICS[kind], "val_loss", *(f"val_{m}" for m in metrics))


def _dataset_info(name: str | None) -> dict[str, Any]:
    from stagetune.workers.data import DATASETS

    # A Dataset made outside the registry (make_dataset in a test) declares nothing.
    return DATASETS.entry(name).info if name is not None and name in DATASETS else {}


def _trainer_info(task: Task) -> dict[str, Any]:
    from stagetune.workers.trainers import TRAINERS

    return TRAINERS.entry(str(task.trainer)).info
