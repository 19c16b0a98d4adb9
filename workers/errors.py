"""Errors that workers raise for input a person can fix."""

from __future__ import annotations


class StagetuneError(Exception):
    """Base of every error stagetune raises on purpose; its message says what to do."""


class ConfigError(StagetuneError, ValueError):
    """A name or value in a request is not allowed; the message lists what is."""


class DataNotFoundError(StagetuneError, FileNotFoundError):
    """A dataset's files are absent; the message says how to get them."""
