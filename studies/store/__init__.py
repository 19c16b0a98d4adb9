"""The SQL store: stagetune's tables (Alembic) and Optuna's RDBStorage on one URL."""

from stagetune.studies.store._engine import (
    default_url,
    get_engine,
    is_database_error,
    migrate,
    retry_seconds,
    safe_url,
    session_scope,
    set_retry_seconds,
)
from stagetune.studies.store._identity import StudyIdentity, studies_version, study_identity
from stagetune.studies.store._store import StageRecord, Store, StudyRecord

__all__ = ["StageRecord", "Store", "StudyIdentity", "StudyRecord", "default_url", "get_engine",
           "is_database_error", "migrate", "retry_seconds", "safe_url", "session_scope",
           "set_retry_seconds", "studies_version", "study_identity"]
