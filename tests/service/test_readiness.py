"""A real `stagetune serve` on PostgreSQL behind a TCP proxy of its own, during database
outages: /readyz answers within 2 s, names only the check that failed (Ray stays "ok"),
and never shows a server detail; API reads answer 503 within 2 s rather than waiting for
the database; all are fine again once it is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from stagetune.studies.search.stages import ORDER
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store
from tests.service.server import Server
from tests.studies.db_proxy import FlakyProxy
from tests.studies.ray_support import NO_PROBES, digits_spec

pytestmark = pytest.mark.slow  # a server behind a database proxy that cuts and hangs

STUDY = "outage-reads"


@pytest.fixture(scope="module")
def proxy(module_postgres_url: str) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(module_postgres_url)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def server(proxy: FlakyProxy, module_postgres_url: str, ray_local: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server on the proxy, with one ended study in its store."""
    store = Store(module_postgres_url)
    spec = load_spec(digits_spec(STUDY, stages=NO_PROBES, resources={}))
    store.open_study(STUDY, spec.model_dump(mode="json"), list(ORDER))
    store.set_status(STUDY, "completed")
    server = Server(proxy.url, tmp_path_factory.mktemp("readiness") / "data",
                    ray_address=ray_local).start()
    yield server
    server.stop()


@pytest.fixture
def outage(proxy: FlakyProxy, server: Server) -> Iterator[FlakyProxy]:
    """The proxy, restored after the test, and the server ready again."""
    yield proxy
    proxy.restore()
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "not ready again after the outage"
        time.sleep(0.5)


def timed_get(url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    reply = httpx.get(url, timeout=30)
    return reply, time.monotonic() - started


def assert_only_the_database_failed(reply: httpx.Response, took: float) -> str:
    assert took < 2.0, f"/readyz took {took:.1f} s"
    assert reply.status_code == 503
    checks = reply.json()["checks"]
    assert set(checks) == {"database", "ray"} and checks["ray"] == "ok", checks
    assert checks["database"].startswith("unreachable")
    assert "127.0.0.1" not in checks["database"] and "postgres" not in checks["database"]
    return str(checks["database"])


def test_readyz_answers_within_two_seconds_while_the_database_is_cut(
        outage: FlakyProxy, server: Server) -> None:
    outage.cut()
    for _ in range(3):
        assert_only_the_database_failed(*timed_get(f"{server.url}/readyz"))
    outage.restore()
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_readyz_checks_side_by_side_while_the_database_hangs(
        outage: FlakyProxy, server: Server) -> None:
    """A database that answers nothing (a server gone off the network) holds its own check
    only: requests side by side and one after another each answer within 2 s, with Ray
    checked and "ok" in every one (a check queued behind a hung one was reported
    unreachable)."""
    outage.hang()
    with ThreadPoolExecutor(max_workers=3) as pool:
        replies = list(pool.map(timed_get, [f"{server.url}/readyz"] * 3))
    replies += [timed_get(f"{server.url}/readyz") for _ in range(3)]
    for reply, took in replies:
        said = assert_only_the_database_failed(reply, took)
        assert said == "unreachable: no answer within 1.5 s"


@pytest.mark.parametrize("path", ["/api/studies", f"/api/studies/{STUDY}",
                                  f"/api/studies/{STUDY}/trials",
                                  f"/api/studies/{STUDY}/trials/0",
                                  f"/api/studies/{STUDY}/plots"])
def test_api_reads_answer_503_within_two_seconds_during_a_cut(
        outage: FlakyProxy, server: Server, path: str) -> None:
    """The first read after the cut (nothing cached) gets a 503 at once, not a wait for the
    database (the runner waits; the service does not)."""
    outage.cut()
    reply, took = timed_get(f"{server.url}{path}")
    assert took < 2.0, f"{path} took {took:.1f} s"
    assert reply.status_code == 503, reply.text
    assert reply.json()["detail"].startswith("the store is unavailable")
    assert "127.0.0.1" not in reply.text and "postgres" not in reply.text
    outage.restore()
    assert httpx.get(f"{server.url}/api/studies/{STUDY}", timeout=10).status_code == 200
