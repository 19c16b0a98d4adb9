"""The queue of pending studies: read and annotated by the supervisor, counted by the API.

A pending study waits for its runner. Pending studies start in the order they were queued
(submitted, or resumed: `queued_at`), and each records who queued it (`queued_by`), so
that the API can bound how many one token keeps waiting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from sqlalchemy import func, select, update

from stagetune.studies.store._engine import session_scope
from stagetune.studies.store._tables import StudyRow


class Queued(NamedTuple):
    name: str
    message: str


def queued_studies(url: str) -> list[Queued]:
    """The pending studies, first queued first."""
    with session_scope(url) as s:
        rows = s.execute(select(StudyRow.name, StudyRow.message)
                         .where(StudyRow.status == "pending")
                         .order_by(StudyRow.queued_at, StudyRow.id)).all()
    return [Queued(row.name, row.message) for row in rows]


def pending_count(url: str, queued_by: str) -> int:
    """How many pending studies `queued_by` has queued."""
    with session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(StudyRow)
                        .where(StudyRow.status == "pending", StudyRow.queued_by == queued_by)) or 0


def note_pending(url: str, messages: Mapping[str, str]) -> None:
    """Say why pending studies wait (study -> message), in one transaction and with no
    event (positions change often); a study that has left pending meanwhile keeps its own."""
    if not messages:
        return
    with session_scope(url) as s:
        for name, message in messages.items():
            s.execute(update(StudyRow).where(StudyRow.name == name, StudyRow.status == "pending")
                      .values(message=message))
