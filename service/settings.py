"""The service's settings: the one `Settings` of every stagetune process, defined in
`workers.settings` (the lowest layer: the workers read it too) and re-exported here."""

from __future__ import annotations

from stagetune.workers.settings import LogLevel, Settings, get_settings

__all__ = ["LogLevel", "Settings", "get_settings"]
