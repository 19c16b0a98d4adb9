"""One engine per URL, SQLite tuned for several writers, sessions in one place."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from studies.errors import StoreError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_MS = 30_000
# How long a new connection is retried, with backoff, before a database error is raised;
# the runner also resumes from the store for this long after one (STAGETUNE_DB_RETRY_SECONDS).
RETRY = {"seconds": float(os.environ.get("STAGETUNE_DB_RETRY_SECONDS", "60"))}


def set_retry_seconds(seconds: float) -> None:
    RETRY["seconds"] = seconds


def retry_seconds() -> float:
    return RETRY["seconds"]


def default_url() -> str:
    return "sqlite:///stagetune.db"


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """The process's engine for `url`; SQLite gets WAL, a busy timeout and foreign keys."""
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise store_error("cannot use the database URL", url, exc) from None
    retry_connects(engine)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def retry_connects(engine: Engine) -> None:
    """Retry opening a connection, with backoff, for up to `retry_seconds()`: a database
    that restarts or drops off the network for a moment costs a wait, not a study.
    (SQLAlchemy pools retry nothing; pool_pre_ping only finds dead connections.)"""

    @event.listens_for(engine, "do_connect")
    def _connect_with_retries(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        deadline = time.monotonic() + retry_seconds()
        delay = 0.25
        while True:
            try:
                return dialect.connect(*cargs, **cparams)
            except Exception as exc:  # the driver's own error types differ per database
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("database unreachable (%s); retrying in %.1f s",
                            str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__,
                            delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def migrate(url: str) -> None:
    """Bring stagetune's tables to the newest Alembic revision."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with get_engine(url).begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise store_error("cannot migrate the database", url, exc) from None


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success, rolls back on error, and wraps database errors."""
    session = sessionmaker(get_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        raise store_error("database error", url, exc) from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def store_error(what: str, url: str, exc: BaseException) -> StoreError:
    """A StoreError whose message names what failed and the error's kind, never the URL or
    the driver's text (they name hosts, users, tables and values, and a message reaches API
    clients); the log gets both."""
    log.warning("%s on %s: %s", what, safe_url(url),
                str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
    return StoreError(f"{what} ({exc.__class__.__name__}); the server's log has the detail")


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as given
        return url


def is_database_error(exc: BaseException) -> bool:
    """Whether `exc` means the database failed (not that the input was wrong)."""
    import optuna

    return isinstance(exc, (StoreError, OperationalError, InterfaceError,
                            optuna.exceptions.StorageInternalError))
