"""The `stagetune` command line. Its commands are in `service.cli._app`, imported only
once the environment below is set, because Ray reads it when it is imported."""

from __future__ import annotations

import logging
import os
import sys

# Commands that start a Ray of their own when RAY_ADDRESS is unset
LOCAL_RAY_COMMANDS = ("serve", "run", "resume", "extend")


def main() -> None:
    _ray_on_loopback(sys.argv[1:2])
    from stagetune.service.cli._app import app

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


def _ray_on_loopback(command: list[str]) -> None:
    """A Ray that a command starts for itself serves this machine only, so it listens on
    127.0.0.1, not on every interface (STAGETUNE_RAY_LOOPBACK=false keeps Ray's default).
    Ray has no bind-address option: it binds its servers to its node's address, which it
    takes as the loopback one only where clusters are switched off, by
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read when ray is imported. `head` and `worker`
    nodes form clusters, and RAY_ADDRESS joins one: those keep Ray's default."""
    if not command or command[0] not in LOCAL_RAY_COMMANDS or os.environ.get("RAY_ADDRESS"):
        return
    from stagetune.workers.settings import get_settings  # pydantic only: imports no ray

    try:
        loopback = get_settings().ray_loopback
    except ValueError:  # a malformed setting: the command's own settings check says which
        loopback = True
    if not loopback:
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def __getattr__(name: str) -> object:
    """`service.cli.app`, the Typer app, for tools and tests; imported on first use."""
    if name == "app":
        from stagetune.service.cli._app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
