"""The service's own tables. Optuna's tables live beside them and are only touched
through Optuna; ours carry a `stagetune_` prefix so the two never collide."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class StudyRow(Base):
    __tablename__ = "stagetune_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    spec: Mapped[dict[str, Any]]
    # pending, running, cancelling (asked to stop), completed, stopped, cancelled, failed
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 onupdate=utcnow)
    # when it last became pending (submitted or resumed), and by whom (a token's digest, ""
    # without tokens): the queue's order, and each token's count of pending studies
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    queued_by: Mapped[str] = mapped_column(String(32), default="")


class StageRow(Base):
    __tablename__ = "stagetune_stages"
    __table_args__ = (UniqueConstraint("study_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("stagetune_studies.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(32))
    position: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, running, done
    verdict: Mapped[str | None] = mapped_column(String(16), default=None)
    message: Mapped[str] = mapped_column(Text, default="")
    figures: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    hand_on: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    epochs: Mapped[float] = mapped_column(default=0.0)
    seconds: Mapped[float] = mapped_column(default=0.0)
    planned: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # the plan's share
    trial_seconds: Mapped[float] = mapped_column(default=0.0)  # its trials' run time, summed
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class TrialMetricRow(Base):
    """One epoch of one trial; the unique key is what keeps a report from counting twice."""

    __tablename__ = "stagetune_trial_metrics"
    __table_args__ = (UniqueConstraint("study_id", "stage", "trial_number", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("stagetune_studies.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(32))
    trial_number: Mapped[int]
    epoch: Mapped[int]
    metrics: Mapped[dict[str, Any]]


class EventRow(Base):
    __tablename__ = "stagetune_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("stagetune_studies.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
