"""Errors the studies package raises; the service maps them to HTTP statuses in one place."""

from __future__ import annotations

from stagetune.workers.errors import StagetuneError


class StoreError(StagetuneError):
    """The SQL store failed or is unreachable. The message never carries the database URL
    or the driver's text (a client may see it); the log has them."""


class DatabaseAway(StoreError):
    """The database stayed unreachable for all of `STAGETUNE_DB_RETRY_SECONDS` while a runner
    waited for it: the waiting is over, and no caller waits again."""


class SpecError(StagetuneError, ValueError):
    """A study spec breaks a rule; the message lists every problem, and `problems` holds
    them one by one as (field path, what is wrong)."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [("", message)]


class StudyNotFoundError(StagetuneError, LookupError):
    """No study of that name is in the store."""


class StudyConflictError(StagetuneError):
    """A study of that name exists with a different spec."""


class StudyCancelled(Exception):
    """The study was cancelled while it ran: not an error, so not a StagetuneError."""
