"""What tells one study's life in the store from another's, for the caches that read it.

SQLite hands a deleted row's id to the next row, and Optuna's studies and trials get their
ids the same way, so an id alone names different studies over time; a name may be used
again. A study's row id with its name and creation time is never used twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select

from stagetune.studies.store._engine import session_scope
from stagetune.studies.store._tables import StudyRow


class StudyIdentity(NamedTuple):
    """One study's life in the store: a study deleted and created again has another."""

    name: str
    row_id: int
    created_at: datetime


def study_identity(url: str, name: str) -> StudyIdentity | None:
    """The identity of the study `name` now, or None when there is none."""
    with session_scope(url) as s:
        row = s.execute(select(StudyRow.id, StudyRow.created_at)
                        .where(StudyRow.name == name)).first()
    return None if row is None else StudyIdentity(name, row.id, row.created_at)


def studies_version(url: str) -> tuple[Any, ...]:
    """Changes whenever a study is created, deleted or changes status, whoever wrote it
    (a delete and a create change the newest update time even when the count and the
    ids come out the same)."""
    with session_scope(url) as s:
        return tuple(s.execute(select(func.count(), func.max(StudyRow.id),
                                      func.max(StudyRow.updated_at))).one())
