"""/readyz during a database outage: it answers within 2 s, "not ready", with no server
detail; and "ready" again once the database is back."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.service.server import Server
from tests.studies.db_proxy import flaky_proxy


def test_readyz_answers_within_two_seconds_while_the_database_is_cut(
        postgres_url: str, ray_local: str, tmp_path: Path) -> None:
    with flaky_proxy(postgres_url) as proxy:
        server = Server(proxy.url, tmp_path / "data", ray_address=ray_local).start()
        try:
            proxy.cut()
            started = time.monotonic()
            reply = httpx.get(f"{server.url}/readyz", timeout=10)
            took = time.monotonic() - started
            assert took < 2.0, f"/readyz took {took:.1f} s"
            assert reply.status_code == 503
            database = reply.json()["checks"]["database"]
            assert database.startswith("unreachable")
            assert "127.0.0.1" not in database and "postgres" not in database
            proxy.restore()
            deadline = time.monotonic() + 30  # the hung check's thread must return first
            while httpx.get(f"{server.url}/readyz", timeout=10).status_code != 200:
                assert time.monotonic() < deadline, "not ready again after the outage"
                time.sleep(0.5)
        finally:
            server.stop()
