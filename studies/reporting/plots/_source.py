"""Everything a figure reads about one study, read once per figure and only what it needs:
a 10,000-trial study must never ship, or even load, every epoch of every trial."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import optuna

from stagetune.studies.reporting.views import TRIAL_STAGES, handed
from stagetune.studies.store import StageRecord, Store, StudyRecord

# A running study's figures are drawn again at most this often; a finished one's once.
RUNNING_REFRESH_SECONDS = 2.0


@dataclass
class PlotSource:
    store: Store
    record: StudyRecord
    _trials: dict[str, list[optuna.trial.FrozenTrial]] = field(default_factory=dict)

    @classmethod
    def load(cls, store: Store, study: str) -> PlotSource:
        return cls(store, store.study(study))

    @property
    def name(self) -> str:
        return self.record.name

    @cached_property
    def handed(self) -> dict[str, Any]:
        return handed(self.record)

    def stage(self, name: str) -> StageRecord | None:
        """The stage's record once it has finished, else None."""
        for stage in self.record.stages:
            if stage.name == name and stage.status == "done":
                return stage
        return None

    def trials(self, stage: str) -> list[optuna.trial.FrozenTrial]:
        if stage not in self._trials:
            self._trials[stage] = self.store.trials(self.name, stage)
        return self._trials[stage]

    def curves(self, stage: str, numbers: Collection[int]) -> dict[int, list[dict[str, Any]]]:
        return self.store.curves(self.name, stage, numbers) if numbers else {}

    @cached_property
    def objective(self) -> tuple[str, str]:
        """The objective and its direction, as the runner chose them: the stages' Optuna
        studies record both (the metric as Optuna's metric name). Before any search stage
        ran: the spec's objective, else accuracy."""
        storage = self.store.optuna_storage
        for stage in TRIAL_STAGES:
            try:
                study = optuna.load_study(study_name=f"{self.name}:{stage}", storage=storage)
            except KeyError:
                continue
            maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
            names = study.metric_names
            metric = names[0] if names else None
            if metric is None:  # a study stored before metric names were recorded
                metric = "val_accuracy" if maximize else "val_rmse"
            return metric, "maximize" if maximize else "minimize"
        task = self.record.spec.get("task", {})
        named = task.get("objective")
        if named:
            return named, task.get("direction") or ("minimize" if named.endswith(
                ("loss", "rmse", "mae", "error")) else "maximize")
        return "val_accuracy", "maximize"

    def version(self) -> tuple[Any, ...]:
        """Changes whenever a figure could: a stage or the study changed, a trial was
        added or finished; while the study runs, also every few seconds (epochs arrive)."""
        trials = tuple((len(ts), sum(t.state.is_finished() for t in ts))
                       for ts in (self.trials(s) for s in TRIAL_STAGES))
        stages = tuple((s.status, s.finished_at) for s in self.record.stages)
        ticking = (int(time.time() / RUNNING_REFRESH_SECONDS)
                   if self.record.status in ("pending", "running") else None)
        return self.record.status, self.record.updated_at, stages, trials, ticking
