"""The store: the only truth about a study. Our tables through SQLAlchemy, the trials
through Optuna's RDBStorage on the same URL (one Optuna study per stage)."""

from __future__ import annotations

import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import optuna
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from stagetune.studies.errors import StoreError, StudyConflictError, StudyNotFoundError
from stagetune.studies.spec import same_spec
from stagetune.studies.store._engine import (
    engine_options,
    get_engine,
    migrate,
    retry_connects,
    session_scope,
    store_error,
)
from stagetune.studies.store._identity import study_identity
from stagetune.studies.store._tables import EventRow, StageRow, StudyRow, TrialMetricRow, utcnow
from stagetune.studies.store._trial_cache import TrialCache


@dataclass(frozen=True)
class StageRecord:
    name: str
    position: int
    status: str
    verdict: str | None
    message: str
    figures: dict[str, Any] = field(default_factory=dict)
    hand_on: dict[str, Any] = field(default_factory=dict)
    epochs: float = 0.0
    seconds: float = 0.0
    planned: dict[str, Any] | None = None
    trial_seconds: float = 0.0
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class StudyRecord:
    name: str
    spec: dict[str, Any]
    status: str
    message: str
    stages: list[StageRecord]
    created_at: datetime | None = None
    updated_at: datetime | None = None
    queued_at: datetime | None = None  # when it last became pending: its place in the queue


class Store:
    """Reads and writes one database URL; safe to build once per process and share."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        get_engine(url)
        if create:
            migrate(url)

    @cached_property
    def optuna_storage(self) -> optuna.storages.RDBStorage:
        try:
            storage = optuna.storages.RDBStorage(self.url, engine_kwargs=engine_options(self.url))
        except Exception as exc:  # Optuna raises several kinds for a bad database
            raise store_error("Optuna cannot use the database", self.url, exc) from None
        retry_connects(storage.engine)
        return storage

    # -- studies ----------------------------------------------------------------------

    def open_study(self, name: str, spec: dict[str, Any], stages: list[str],
                   queued_by: str = "") -> StudyRecord:
        """Create the study, or return the stored one if it has the same spec (a resume).
        `queued_by`: who submitted it (a token's digest), counted by `pending_count`."""
        with session_scope(self.url) as s:
            row = s.scalar(select(StudyRow).where(StudyRow.name == name))
            if row is not None and not same_spec(row.spec, spec):
                raise StudyConflictError(
                    f"study '{name}' already exists with a different spec; give the new one "
                    "another name, or run the stored spec to resume it")
            if row is None:
                row = StudyRow(name=name, spec=spec, status="pending", message="",
                               queued_by=queued_by)
                s.add(row)
                s.flush()
                s.add_all(StageRow(study_id=row.id, name=n, position=i, message="", figures={},
                                   hand_on={}) for i, n in enumerate(stages))
        return self.study(name)

    def study(self, name: str) -> StudyRecord:
        with session_scope(self.url) as s:
            row = self._study_row(s, name)
            stages = s.scalars(select(StageRow).where(StageRow.study_id == row.id)
                               .order_by(StageRow.position)).all()
            return _study_record(row, stages)

    def list_studies(self, status: str | None = None, offset: int = 0, limit: int = 50
                     ) -> tuple[list[StudyRecord], int]:
        """A page of studies, newest first, optionally of one status; and the total."""
        with session_scope(self.url) as s:
            query = select(StudyRow)
            if status is not None:
                query = query.where(StudyRow.status == status)
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(query.order_by(StudyRow.id.desc()).offset(offset).limit(limit)).all()
            stages = s.scalars(select(StageRow).where(StageRow.study_id.in_([r.id for r in rows]))
                               .order_by(StageRow.position)).all()
            return [_study_record(r, [st for st in stages if st.study_id == r.id])
                    for r in rows], total

    def delete_study(self, name: str) -> None:
        """Remove a study: our rows and its Optuna studies (one per stage)."""
        record = self.study(name)
        for stage in record.stages:
            try:
                optuna.delete_study(study_name=f"{name}:{stage.name}", storage=self.optuna_storage)
            except KeyError:  # the stage never ran trials
                pass
        with session_scope(self.url) as s:
            s.delete(self._study_row(s, name))
        self.trial_cache.forget(name)

    def trials(self, study: str, stage: str) -> list[optuna.trial.FrozenTrial]:
        """The trials a stage ran, read through Optuna's cached storage: finished trials are
        read from the database once per study (`_trial_cache`), so a 10,000-trial study pages
        quickly. Refine's copies of coarse trials (told to its sampler) are coarse's."""
        identity = study_identity(self.url, study)
        if identity is None:
            return []
        trials = self.trial_cache.trials(identity, stage)
        return [t for t in trials if "from" not in t.user_attrs]

    @cached_property
    def trial_cache(self) -> TrialCache:
        return TrialCache(self.optuna_storage)

    def study_names(self) -> list[str]:
        with session_scope(self.url) as s:
            return list(s.scalars(select(StudyRow.name).order_by(StudyRow.id)))

    def set_status(self, name: str, status: str, message: str = "",
                   only_from: Collection[str] | None = None, queued_by: str = "") -> bool:
        """Set a study's status. With `only_from`, only while its status is one of those (a
        compare-and-set: a cancel and a runner never overwrite each other). True if set.
        A study set pending (a resume) goes to the back of the queue, queued by `queued_by`."""
        with session_scope(self.url) as s:
            row = self._study_row(s, name)
            change = update(StudyRow).where(StudyRow.id == row.id)
            if only_from is not None:
                change = change.where(StudyRow.status.in_(list(only_from)))
            queued = {"queued_at": utcnow(), "queued_by": queued_by} if status == "pending" else {}
            result = s.execute(change.values(status=status, message=message, **queued))
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            s.add(EventRow(study_id=row.id, kind=f"study_{status}", message=message))
        return True

    # -- stages -----------------------------------------------------------------------

    def start_stage(self, study: str, stage: str, planned: dict[str, Any] | None = None) -> None:
        with session_scope(self.url) as s:
            row = self._stage_row(s, study, stage)
            row.status = "running"
            row.planned = planned
            row.started_at = row.started_at or utcnow()
            s.add(EventRow(study_id=row.study_id, kind="stage_started", message=stage))

    def finish_stage(self, study: str, stage: str, verdict: str, message: str,
                     figures: dict[str, Any], hand_on: dict[str, Any],
                     epochs: float, seconds: float, trial_seconds: float = 0.0,
                     planned: dict[str, Any] | None = None) -> None:
        with session_scope(self.url) as s:
            row = self._stage_row(s, study, stage)
            row.trial_seconds = trial_seconds
            row.planned = planned if planned is not None else row.planned
            row.status, row.verdict, row.message = "done", verdict, message
            row.figures, row.hand_on = figures, hand_on
            row.epochs, row.seconds = epochs, seconds
            row.finished_at = utcnow()
            s.add(EventRow(study_id=row.study_id, kind="stage_finished",
                           message=f"{stage}: {verdict}: {message}"))

    # -- trials -----------------------------------------------------------------------

    def record_epoch(self, study: str, stage: str, trial_number: int, epoch: int,
                     metrics: dict[str, Any]) -> None:
        """Record one epoch of a trial. An epoch run again (after a lost worker, or by a
        trial continued from an older checkpoint after a restart) replaces its record:
        the curve shows the run that went on, and no epoch is counted twice."""
        try:
            with session_scope(self.url) as s:
                study_id = self._study_row(s, study).id
                replaced = s.execute(update(TrialMetricRow).where(
                    TrialMetricRow.study_id == study_id, TrialMetricRow.stage == stage,
                    TrialMetricRow.trial_number == trial_number, TrialMetricRow.epoch == epoch,
                ).values(metrics=metrics))
                if not replaced.rowcount:  # type: ignore[attr-defined]
                    s.add(TrialMetricRow(study_id=study_id, stage=stage,
                                         trial_number=trial_number, epoch=epoch, metrics=metrics))
        except StoreError as exc:  # another attempt's report of it came in meanwhile
            if not isinstance(exc.__cause__, IntegrityError):
                raise

    def record_history(self, study: str, stage: str, trial_number: int,
                       history: list[dict[str, Any]]) -> None:
        """Record the epochs of a finished trial that its reports did not."""
        with session_scope(self.url) as s:
            study_id = self._study_row(s, study).id
            have = set(s.scalars(select(TrialMetricRow.epoch).where(
                TrialMetricRow.study_id == study_id, TrialMetricRow.stage == stage,
                TrialMetricRow.trial_number == trial_number)))
            s.add_all(TrialMetricRow(study_id=study_id, stage=stage, trial_number=trial_number,
                                     epoch=int(m["epoch"]), metrics=m)
                      for m in history if int(m["epoch"]) not in have)

    def curves(self, study: str, stage: str, numbers: Collection[int] | None = None
               ) -> dict[int, list[dict[str, Any]]]:
        """Per-epoch metrics of every trial of a stage (or of the trials `numbers`), by
        trial number."""
        with session_scope(self.url) as s:
            study_id = self._study_row(s, study).id
            query = select(TrialMetricRow).where(TrialMetricRow.study_id == study_id,
                                                 TrialMetricRow.stage == stage)
            if numbers is not None:
                query = query.where(TrialMetricRow.trial_number.in_(list(numbers)))
            rows = s.scalars(query.order_by(TrialMetricRow.trial_number,
                                            TrialMetricRow.epoch)).all()
            out: dict[int, list[dict[str, Any]]] = {}
            for r in rows:
                out.setdefault(r.trial_number, []).append(r.metrics)
            return out

    def curves_of(self, study: str, stage: str, trial_number: int) -> list[dict[str, Any]]:
        """One trial's per-epoch metrics."""
        with session_scope(self.url) as s:
            study_id = self._study_row(s, study).id
            return [r.metrics for r in s.scalars(
                select(TrialMetricRow).where(TrialMetricRow.study_id == study_id,
                                             TrialMetricRow.stage == stage,
                                             TrialMetricRow.trial_number == trial_number)
                .order_by(TrialMetricRow.epoch))]

    def optuna_study(self, study: str, stage: str, direction: str,
                     sampler: optuna.samplers.BaseSampler | None = None,
                     pruner: optuna.pruners.BasePruner | None = None,
                     metric: str | None = None) -> optuna.Study:
        """The Optuna study `<study>:<stage>`, created on first use; `metric` names its
        objective in the store (Optuna's metric names), for the figures to read back."""
        created = optuna.create_study(storage=self.optuna_storage, study_name=f"{study}:{stage}",
                                      direction=direction,  # type: ignore[arg-type]
                                      sampler=sampler, pruner=pruner, load_if_exists=True)
        if metric is not None and created.metric_names != [metric]:
            with warnings.catch_warnings():  # set_metric_names is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                created.set_metric_names([metric])
        return created

    def events(self, study: str) -> list[tuple[str, str]]:
        with session_scope(self.url) as s:
            study_id = self._study_row(s, study).id
            rows = s.scalars(select(EventRow).where(EventRow.study_id == study_id)
                             .order_by(EventRow.id)).all()
            return [(r.kind, r.message) for r in rows]

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    def _study_row(s: Any, name: str) -> StudyRow:
        row = s.scalar(select(StudyRow).where(StudyRow.name == name))
        if row is None:
            raise StudyNotFoundError(f"no study named '{name}' in the store")
        return row

    def _stage_row(self, s: Any, study: str, stage: str) -> StageRow:
        study_id = self._study_row(s, study).id
        row = s.scalar(select(StageRow).where(StageRow.study_id == study_id,
                                              StageRow.name == stage))
        if row is None:
            raise StudyNotFoundError(f"study '{study}' has no stage '{stage}'")
        return row


def _study_record(row: StudyRow, stages: Any) -> StudyRecord:
    return StudyRecord(row.name, row.spec, row.status, row.message,
                       [_stage_record(st) for st in stages], row.created_at, row.updated_at,
                       row.queued_at)


def _stage_record(row: StageRow) -> StageRecord:
    return StageRecord(row.name, row.position, row.status, row.verdict, row.message,
                       row.figures or {}, row.hand_on or {}, row.epochs, row.seconds,
                       row.planned, row.trial_seconds or 0.0, row.started_at, row.finished_at)
