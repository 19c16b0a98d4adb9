"""Extending a finished study: more budget, and refine and confirm to go on.

Nothing recorded changes: the trials stay as they are, and the stages that ran stay done.
Refine and confirm are set pending again, keeping what they spent, and the study is
queued; its next runner goes on with refine from every trial it observed, then runs
confirm again (a new round, `extensions`). The budget grows by what was asked: a study
with an epoch budget gets that many more epochs, one without gets what it spent plus
that many (it had no limit to add to).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from stagetune.studies.errors import StudyConflictError, StudyNotFoundError
from stagetune.studies.store._engine import session_scope
from stagetune.studies.store._tables import EventRow, StageRow, StudyRow, utcnow

EXTENDED = "study_extended"  # the event each extension records: confirm counts its rounds
GOES_ON = ("refine", "confirm")


def extend_study(url: str, name: str, epochs: int, seconds: float | None = None,
                 queued_by: str = "") -> None:
    """Give a completed or stopped study `epochs` (and `seconds`) more budget and queue it.
    A study that cannot go on raises StudyConflictError, saying why."""
    with session_scope(url) as s:
        row = s.scalar(select(StudyRow).where(StudyRow.name == name).with_for_update())
        if row is None:
            raise StudyNotFoundError(f"no study named '{name}' in the store")
        stages = {st.name: st for st in s.scalars(select(StageRow).where(
            StageRow.study_id == row.id))}
        _can_extend(row, stages)
        spent = sum(st.epochs for st in stages.values())
        budget = dict(row.spec.get("budget") or {})
        budget["epochs"] = round((budget.get("epochs") or spent) + epochs, 3)
        if seconds and budget.get("seconds") is not None:  # none: it stays unlimited
            budget["seconds"] += seconds
        row.spec = {**row.spec, "budget": budget}
        words = f"extended by {epochs} epochs" + (f" and {seconds:g} s" if seconds else "") \
            + f" (budget now {budget['epochs']:g} epochs): refine goes on, then confirm again"
        s.execute(update(StageRow).where(StageRow.study_id == row.id,
                                         StageRow.name.in_(GOES_ON))
                  .values(status="pending", verdict=None, message=words))
        s.execute(update(StudyRow).where(StudyRow.id == row.id).values(
            status="pending", message=words, queued_at=utcnow(), queued_by=queued_by))
        s.add(EventRow(study_id=row.id, kind=EXTENDED, message=words))


def extensions(url: str, name: str) -> int:
    """How many times a study was extended: the round its confirm runs now."""
    with session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(EventRow).join(
            StudyRow, StudyRow.id == EventRow.study_id).where(
            StudyRow.name == name, EventRow.kind == EXTENDED)) or 0


def _can_extend(row: StudyRow, stages: dict[str, Any]) -> None:
    if row.status not in ("completed", "stopped"):
        raise StudyConflictError(
            f"study '{row.name}' is {row.status}; only a completed or stopped study can be "
            "extended (resume a cancelled or failed one)")
    spec_stages = row.spec.get("stages") or {}
    if (spec_stages.get("refine") or {}).get("enabled") is False:
        raise StudyConflictError(f"study '{row.name}' has refine disabled: extending it "
                                 "would run nothing")
    refine = stages.get("refine")
    if refine is None or refine.status != "done" or refine.verdict not in ("passed", "warned"):
        raise StudyConflictError(
            f"study '{row.name}' stopped before refine found a configuration: there is "
            "nothing to go on from; fix what its stages say and submit it again")
