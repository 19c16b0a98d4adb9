"""Errors the studies package raises; the service maps them to HTTP statuses in one place."""

from __future__ import annotations

from workers.errors import StagetuneError


class StoreError(StagetuneError):
    """The SQL store failed or is unreachable; the message names the URL's database."""


class StudyNotFoundError(StagetuneError, LookupError):
    """No study of that name is in the store."""


class StudyConflictError(StagetuneError):
    """A study of that name exists with a different spec."""


class StudyCancelled(Exception):
    """The study was cancelled while it ran: not an error, so not a StagetuneError."""
