"""The plain data that crosses the worker boundary: a trial request and its result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from stagetune.workers.errors import ConfigError

Metrics = dict[str, float]

Mode = Literal["train", "init_check", "overfit", "lr_probe", "baseline", "data_check"]
MODES: tuple[str, ...] = ("train", "init_check", "overfit", "lr_probe", "baseline", "data_check")


@dataclass(frozen=True)
class Task:
    """What is trained on what: registered names and their options. A task with a
    `trainer` may leave out the model (the trainer builds its own) and the dataset."""

    dataset: str | None
    model: str | None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    trainer: str | None = None  # a registered training function in place of the built-in loop
    loss: str | None = None  # a registered loss; None: the dataset's, else by its kind
    metrics: tuple[str, ...] = ()  # registered metrics reported besides the dataset's own

    def needs(self, what: Literal["dataset", "model"]) -> str:
        """The dataset or model the task names; a ConfigError when it names none (a
        trainer's task may leave both out)."""
        name = self.dataset if what == "dataset" else self.model
        if name is None:
            raise ConfigError(f"this needs a {what}, and the task names none (its trainer "
                              f"brings its own); name one in task.{what}")
        return name


@dataclass(frozen=True)
class TrialRequest:
    """One unit of work. `params` holds the knobs (see workers.config); `options` the
    probe's own settings (overfit: samples, steps; lr_probe: iterations, lr_min, lr_max;
    both: max_epochs, a cap on their cost in epochs).

    `epochs` is the absolute last epoch: resumed from a checkpoint taken after epoch k,
    a run trains epochs k + 1 .. `epochs`, on the schedule of a `horizon`-epoch run."""

    task: Task
    params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    mode: Mode = "train"
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    return_weights: bool = False  # train: hand the trained state_dict back (on the CPU)
    horizon: int | None = None  # epochs the LR schedule spans; None = `epochs`
    checkpoint_at: tuple[int, ...] = ()  # after these (absolute) epochs, hand a checkpoint to `save`
    resume: bytes | None = None  # a checkpoint (bytes from `save`) to continue from
    # The metric early stopping and final["best"] follow (any metric the run reports) and
    # its direction; None: the task's default (workers.objective.objective_for).
    objective: str | None = None
    direction: Literal["maximize", "minimize"] | None = None
    vitals: bool = False  # train: stop a fresh run early when its vital signs say it is hopeless


@dataclass
class TrialResult:
    """What came of a request. `status` is completed, early_stopped, stopped, hopeless,
    diverged (train) or passed, warned, failed (probes); `final` holds the last epoch's metrics
    plus the best objective value; `probe` holds a probe's figures; `worker` says where
    it ran (node, pid, device, whether the data was already in memory). A resumed run's
    `history` and `final` cover the epochs this call trained, after `start_epoch`."""

    status: str
    history: list[Metrics] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    epoch: int | None = None
    probe: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    state_dict: dict[str, Any] | None = None
    worker: dict[str, Any] = field(default_factory=dict)
    parameters: int = 0  # the model's parameter count, frozen ones included
    start_epoch: int = 0  # the epoch a resumed run continued after; 0 = a fresh run
    partial: float = 0.0  # hopeless: the share of epoch `epoch` it ran before it stopped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
