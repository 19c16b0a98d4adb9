"""What a trainer function gets: the trial's values, where and how long to train, and the
three calls back into stagetune (report, save_checkpoint, load_checkpoint)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pydantic import BaseModel

from stagetune.workers.config import ModelConfig, TrainConfig
from stagetune.workers.request import Metrics
from stagetune.workers.trainers import _checkpoint

log = logging.getLogger(__name__)

Report = Callable[[int, Metrics], bool]
Save = Callable[[int, bytes], None]


class TrainerStop(BaseException):  # no Error suffix: control flow, like StopIteration
    """Unwinds a trainer from inside `ctx.report`: it reported after being told to stop,
    past its last epoch, or something stagetune cannot use. A BaseException, so that a
    trainer's own `except Exception` does not swallow it."""

    def __init__(self, message: str, failed: bool) -> None:
        super().__init__(message)
        self.message, self.failed = message, failed


class TrainerContext:
    """One trial's view for a trainer function.

    Train epochs `start_epoch + 1 .. epochs` (absolute numbers: a continued trial starts
    after its checkpoint's epoch), on the schedule of a `horizon`-epoch run, seeded with
    `seed`, on `device`; call `report(epoch, metrics)` after each epoch and return once it
    answers True (pruned, budget spent or cancelled).

    `params`: the trial's values as set (task.model_options under the trial's own);
    `train`, `arch`: the built-in knobs parsed, defaults filled in (lr, optimizer,
    batch_size, ... and dropout, width, ...); `knobs`: the trainer's declared knobs (an
    instance of its pydantic model) or None; `data`: the task's loaded Dataset when the task
    names one, else None; `mode`: "train", or the probe that asked for the parts;
    `checkpoint_at`: the epochs after which a checkpoint is kept (saving at others is
    allowed and only costs time).
    """

    def __init__(self, *, trainer: str, params: Mapping[str, Any], knobs: BaseModel | None,
                 train: TrainConfig, arch: ModelConfig, epochs: int, horizon: int, seed: int,
                 device: torch.device, mode: str, data: Any, objective: str | None,
                 direction: str | None = None,
                 checkpoint_at: tuple[int, ...] = (), resume: bytes | None = None,
                 report: Report | None = None, save: Save | None = None) -> None:
        self.trainer = trainer
        self.params = dict(params)
        self.knobs, self.train, self.arch = knobs, train, arch
        self.epochs, self.horizon, self.seed = epochs, horizon, seed
        self.device, self.mode, self.data = device, mode, data
        self.objective, self.direction = objective, direction
        self.checkpoint_at = checkpoint_at
        self._report, self._save = report, save
        self._resumed: Any = None
        self.start_epoch = 0
        if resume is not None:
            self.start_epoch, self._resumed = _checkpoint.unpack(trainer, resume)
        self.history: list[Metrics] = []
        self.stopped_at: int | None = None  # the epoch whose report answered True
        self.latest: bytes | None = None  # the last checkpoint saved, packed
        self.notes: list[str] = []  # said in the trial's message
        self._checked = False
        self._clock = time.perf_counter()

    @property
    def last_epoch(self) -> int:
        """The last epoch reported (start_epoch before the first report)."""
        return int(self.history[-1]["epoch"]) if self.history else self.start_epoch

    def report(self, epoch: int, metrics: Mapping[str, Any]) -> bool:
        """Record epoch `epoch`'s metrics (numbers by name, the study's objective among
        them); True means stop now: return from the trainer."""
        if self.stopped_at is not None:
            raise TrainerStop(f"it reported epoch {epoch} after being told to stop at epoch "
                              f"{self.stopped_at}; it was stopped there", failed=False)
        epoch = self._epoch(epoch)
        if epoch > self.epochs:
            self.notes.append(f"it reported epoch {epoch}, past its last epoch {self.epochs} "
                              "(ctx.epochs), and was stopped there")
            raise TrainerStop("past the last epoch", failed=False)
        values = self._numbers(epoch, metrics)
        now = time.perf_counter()
        values.setdefault("epoch_seconds", now - self._clock)
        self._clock = now
        values = {"epoch": epoch, **values}
        self.history.append(values)
        if self._report is not None and self._report(epoch, values):
            self.stopped_at = epoch
            return True
        return False

    def save_checkpoint(self, obj: Any, epoch: int | None = None) -> None:
        """Keep `obj` (state_dicts, tensors, plain containers and numbers, or bytes) as the
        checkpoint after `epoch`, by default the last one reported: call it after
        `report`. A continued trial gets it back from `load_checkpoint`."""
        at = self.last_epoch if epoch is None else self._epoch(epoch, order=False)
        blob = _checkpoint.pack(self.trainer, at, obj)
        if not self._checked:  # a safe load must read it back: find out now, not at resume
            _checkpoint.check_loadable(self.trainer, blob)
            self._checked = True
        self.latest = blob
        if self._save is not None and at in self.checkpoint_at:
            self._save(at, blob)

    def load_checkpoint(self) -> Any:
        """The object saved by the run this trial continues (after epoch `start_epoch`),
        or None for a fresh run."""
        return self._resumed

    # -- checks -------------------------------------------------------------------------

    def _epoch(self, epoch: Any, order: bool = True) -> int:
        if isinstance(epoch, bool) or not isinstance(epoch, (int, float)) \
                or not float(epoch).is_integer():
            raise TrainerStop(f"it reported epoch {epoch!r}; epochs are whole numbers, "
                              f"{self.start_epoch + 1} to {self.epochs}", failed=True)
        value = int(epoch)
        if order and value <= self.last_epoch:
            raise TrainerStop(f"it reported epoch {value} after epoch {self.last_epoch}; "
                              f"report each epoch once, counting up from ctx.start_epoch + 1 "
                              f"= {self.start_epoch + 1}", failed=True)
        return value

    def _numbers(self, epoch: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        if not isinstance(metrics, Mapping):
            raise TrainerStop(f"it reported {type(metrics).__name__} for epoch {epoch}; report "
                              "a dict of metric names to numbers", failed=True)
        out: dict[str, float] = {}
        for name, value in metrics.items():
            if name == "epoch":
                continue
            try:
                out[str(name)] = float(value)
            except (TypeError, ValueError, RuntimeError):
                raise TrainerStop(f"it reported {name}={_short(value)} for epoch {epoch}; "
                                  "metrics are numbers", failed=True) from None
        if self.objective is not None and self.objective not in out:
            shown = ", ".join(sorted(out)) or "no metrics"
            raise TrainerStop(f"it reported {shown} but not the objective '{self.objective}'; "
                              "report it after each epoch, or set task.objective to one it "
                              "reports", failed=True)
        if self.objective is not None and not math.isfinite(out[self.objective]):
            log.warning("trainer %s: %s is %s in epoch %d", self.trainer, self.objective,
                        out[self.objective], epoch)
        return out


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
