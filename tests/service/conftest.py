"""Servers for the API tests: real `stagetune serve` subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.server import Server


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory, ray_local: str) -> Iterator[Server]:
    """One server without tokens, on a SQLite store, joined to the Ray of `ray_local`."""
    tmp: Path = tmp_path_factory.mktemp("server")
    server = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data", ray_address=ray_local).start()
    yield server
    server.stop()
