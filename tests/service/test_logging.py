"""STAGETUNE_LOG_LEVEL and STAGETUNE_ACCESS_LOG on a real `stagetune serve`, and the
one-line refusal of a level that does not exist."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stagetune.service.logs import configure_logging
from stagetune.service.settings import Settings
from tests.service.server import STAGETUNE, Server

ACCESS_LINE = re.compile(r'"GET /api/studies/no-such-study HTTP/1\.1" 404')


@pytest.fixture(scope="module")
def logged_server(tmp_path_factory: pytest.TempPathFactory, ray_local: str) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("logged")
    server = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data", tokens="log-test-token",
                    ray_address=ray_local,
                    env={"STAGETUNE_ACCESS_LOG": "true", "STAGETUNE_LOG_LEVEL": "INFO"}).start()
    yield server
    server.stop()


@pytest.mark.slow
def test_the_access_log_has_one_line_a_request_and_never_the_token(logged_server: Server) -> None:
    headers = {"Authorization": "Bearer log-test-token"}
    assert httpx.get(f"{logged_server.url}/api/studies/no-such-study", headers=headers,
                     timeout=10).status_code == 404
    assert httpx.get(f"{logged_server.url}/metrics", timeout=10).status_code == 401
    log = logged_server.log.read_text()
    assert len(ACCESS_LINE.findall(log)) == 1, log
    assert '"GET /metrics HTTP/1.1" 401' in log
    assert "log-test-token" not in log
    # info level: stagetune's own info lines show (uvicorn's start-up line is one)
    assert "Application startup complete" in log or "Uvicorn running" in log, log


def test_by_default_there_is_no_access_log_and_warnings_only() -> None:
    configure_logging(Settings())
    try:
        assert not logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO)
        assert not logging.getLogger("stagetune.studies.run.runner").isEnabledFor(logging.INFO)
        assert logging.getLogger("stagetune.studies.run.runner").isEnabledFor(logging.WARNING)
        configure_logging(Settings(log_level="debug", access_log=True))
        assert logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO)
        assert logging.getLogger("stagetune.service.supervisor").isEnabledFor(logging.DEBUG)
    finally:
        configure_logging(Settings())


def test_an_unknown_log_level_is_one_line_naming_the_choices(tmp_path: Path) -> None:
    done = subprocess.run([STAGETUNE, "serve", "--db", f"sqlite:///{tmp_path / 's.db'}"],
                          env={"PATH": "/usr/bin:/bin", "STAGETUNE_LOG_LEVEL": "loud"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    assert "log_level" in done.stderr and "'debug', 'info', 'warning'" in done.stderr, done.stderr


@pytest.mark.slow
def test_sigterm_shuts_a_server_down_gracefully_without_a_traceback(tmp_path: Path) -> None:
    """As `docker stop` stops the API: uvicorn's own shutdown runs to the end. The Ray it
    starts used to take SIGTERM over and exit mid-loop, printing two tracebacks."""
    server = Server(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "data",
                    env={"STAGETUNE_LOG_LEVEL": "INFO"}).start()
    server.stop()
    log = server.log.read_text()
    # uvicorn re-raises the signal once it has shut down, so the exit says what stopped it
    assert server.process is not None and server.process.returncode == -signal.SIGTERM, log
    assert "Application shutdown complete" in log and "Traceback" not in log, log
