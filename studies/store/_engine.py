"""One engine per URL, SQLite tuned for several writers, sessions in one place."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import tenacity
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from stagetune.studies.errors import DatabaseAway, StoreError
from stagetune.workers.settings import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_MS = 30_000
# How long a new connection is retried, with backoff, before a database error is raised;
# a runner's writes are tried again, and a runner resumes from the store, for this long
# after one (STAGETUNE_DB_RETRY_SECONDS).
RETRY: dict[str, float] = {}  # set_retry_seconds: this process's own choice
# The most a request waits for a database that is away, in a process that `fail_fast`s.
REQUEST_SECONDS = 2
_FAST = {"on": False}


def set_retry_seconds(seconds: float) -> None:
    RETRY["seconds"] = seconds


def retry_seconds() -> float:
    return RETRY.get("seconds", get_settings().db_retry_seconds)


def fail_fast() -> None:
    """This process answers requests (the service): while the database is away, a connection
    gives up within about REQUEST_SECONDS (no retries, short connect and TCP timeouts, a
    bounded wait for a pooled connection), so a request answers 503 rather than hanging. A
    runner, in its own process, waits an outage out instead (`retry_connects`, `wait_out`)."""
    _FAST["on"] = True


def failing_fast() -> bool:
    return _FAST["on"]


def default_url() -> str:
    return "sqlite:///stagetune.db"


# PostgreSQL connections that cannot hang: libpq's TCP keepalives and user timeout find a
# server gone off the network (no reset ever arrives) in about 30 s, and a lock wait that
# long means a stuck holder. Each raises a database error, which the runner waits out.
POSTGRES_CONNECT_ARGS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10,
                         "keepalives_interval": 5, "keepalives_count": 3,
                         "tcp_user_timeout": 30_000, "options": "-c lock_timeout=60000"}
# A request's: libpq's shortest connect timeout, and unacknowledged data (a statement sent
# to a server gone off the network) abandoned as quickly.
POSTGRES_FAST_ARGS = {**POSTGRES_CONNECT_ARGS, "connect_timeout": REQUEST_SECONDS,
                      "tcp_user_timeout": REQUEST_SECONDS * 1000}


def connect_args(url: str) -> dict[str, Any]:
    """What every connection to `url` is opened with (also Optuna's, see the store)."""
    if url.startswith("sqlite"):
        return {"timeout": SQLITE_BUSY_MS / 1000}
    if url.startswith("postgresql"):
        return dict(POSTGRES_FAST_ARGS if failing_fast() else POSTGRES_CONNECT_ARGS)
    return {}


def engine_options(url: str) -> dict[str, Any]:
    """What every engine on `url` is created with (Optuna's too): a pooled connection is
    pinged before use; a request waits at most REQUEST_SECONDS for one (`fail_fast`)."""
    options: dict[str, Any] = {"pool_pre_ping": True, "connect_args": connect_args(url)}
    if failing_fast() and not url.startswith("sqlite"):  # SQLite's pools may take no timeout
        options["pool_timeout"] = REQUEST_SECONDS
    return options


def get_engine(url: str) -> Engine:
    """The process's engine for `url`; SQLite gets WAL, a busy timeout and foreign keys."""
    return _engine(url, failing_fast())


@lru_cache(maxsize=8)
def _engine(url: str, _fast: bool) -> Engine:
    try:
        engine = create_engine(url, **engine_options(url))
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
    (SQLAlchemy pools retry nothing; pool_pre_ping only finds dead connections.) Not in a
    process that `fail_fast`s."""

    @event.listens_for(engine, "do_connect")
    def _connect_with_retries(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        if failing_fast():
            return dialect.connect(*cargs, **cparams)
        retrying = _retrying(tenacity.stop_before_delay(retry_seconds()))
        return retrying(dialect.connect, *cargs, **cparams)  # the driver's errors: any


def wait_out(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`call(*args, **kwargs)`, called again with backoff after a database error for up to
    `retry_seconds()`; then DatabaseAway. For a runner's writes while trials run: a
    statement cut off in flight raises at once (a new connection waits by itself,
    `retry_connects`), and unwinding would stop the trials. `call` must be safe to repeat."""
    retrying = _retrying(tenacity.stop_after_delay(retry_seconds()),
                         retry=tenacity.retry_if_exception(_worth_waiting_for))
    try:
        return retrying(call, *args, **kwargs)
    except Exception as exc:
        if not _worth_waiting_for(exc):
            raise
        raise store_away(exc) from exc


def _worth_waiting_for(exc: BaseException) -> bool:
    """A database error, but not one that ends a wait already over."""
    return is_database_error(exc) and not isinstance(exc, DatabaseAway)


def store_away(exc: BaseException) -> DatabaseAway:
    """The error that ends a runner's wait for the database: for how long, and the kind of
    the driver's error (its text names hosts and users, and a study's message reaches API
    clients; the log has it)."""
    cause = exc
    while not isinstance(cause, SQLAlchemyError) and cause.__cause__ is not None:
        cause = cause.__cause__  # a StoreError's or Optuna's wrapping
    log.warning("the database failed for %.0f s: %s", retry_seconds(),
                str(cause).splitlines()[0] if str(cause) else cause.__class__.__name__)
    return DatabaseAway(f"the database failed for {retry_seconds():.0f} s "
                        f"({cause.__class__.__name__}; the server's log has the detail)")


def _retrying(stop: Any, **policy: Any) -> tenacity.Retrying:
    """The one retry policy for a database that is away: backoff from 0.25 s to 5 s,
    logged, the last error raised."""
    return tenacity.Retrying(stop=stop, wait=tenacity.wait_exponential(multiplier=0.25, max=5.0),
                             before_sleep=_log_retry, reraise=True, **policy)


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    log.warning("database unreachable (%s); retrying in %.1f s",
                str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__,
                state.upcoming_sleep)


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
