"""Logging for the service: STAGETUNE_LOG_LEVEL for stagetune's and uvicorn's loggers,
and STAGETUNE_ACCESS_LOG for uvicorn's access log (one line a request), which is off
by default and, when on, shows at any log level."""

from __future__ import annotations

import logging

from stagetune.workers.settings import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS = "uvicorn.access"


def configure_logging(settings: Settings) -> None:
    """Set the levels; give the root logger a handler if the process has none (uvicorn
    configures only its own loggers)."""
    level = settings.log_level.upper()
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=FORMAT)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(level)
    # uvicorn writes an access line at INFO through its own handler, when it has one
    logging.getLogger(ACCESS).setLevel(logging.INFO if settings.access_log else logging.WARNING)

