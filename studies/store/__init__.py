"""The SQL store: stagetune's tables (Alembic) and Optuna's RDBStorage on one URL."""

from stagetune.studies.store._engine import (
    default_url,
    fail_fast,
    get_engine,
    is_database_error,
    migrate,
    retry_seconds,
    safe_url,
    session_scope,
    set_retry_seconds,
    store_away,
    wait_out,
)
from stagetune.studies.store._extend import extend_study, extensions
from stagetune.studies.store._identity import StudyIdentity, studies_version, study_identity
from stagetune.studies.store._queue import Queued, note_pending, pending_count, queued_studies
from stagetune.studies.store._store import StageRecord, Store, StudyRecord

__all__ = ["Queued", "StageRecord", "Store", "StudyIdentity", "StudyRecord", "default_url",
           "extend_study", "extensions", "fail_fast", "get_engine", "is_database_error",
           "migrate", "note_pending", "pending_count", "queued_studies", "retry_seconds",
           "safe_url", "session_scope", "set_retry_seconds", "store_away", "studies_version",
           "study_identity", "wait_out"]
