"""Liveness and readiness, without auth (container health checks call them)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from functools import partial

import ray
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from stagetune.service.api.deps import StoreDep
from stagetune.service.schemas import Health
from stagetune.studies.store import get_engine

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)

READY_SECONDS = 1.5  # the checks' answer time: a hung database is "not ready", quickly


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(store: StoreDep) -> JSONResponse:
    """The database answers and the Ray cluster is reachable, each within 1.5 s."""
    url = store.url
    pending = {"database": _started(partial(_database, url)), "ray": _started(_ray)}
    wait(pending.values(), timeout=READY_SECONDS)  # side by side: one deadline for both
    checks = {name: _verdict(name, future) for name, future in pending.items()}
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


def _verdict(name: str, future: Future[str]) -> str:
    if not future.done():
        return f"unreachable: no answer within {READY_SECONDS} s"
    error = future.exception()
    if error is not None:  # not ready; the log keeps the detail
        log.warning("readyz: %s check failed: %s", name, error)
        return f"unreachable ({error.__class__.__name__}); see the service log"
    return future.result()


def _started(check: Callable[[], str]) -> Future[str]:
    """`check` running in a thread of its own, for this request only: a check that hangs
    (a database gone off the network) never holds another check or another request's
    answer. The service's connections give up within about 2 s (`fail_fast`), so such
    threads do not pile up; a daemon one never holds the process's exit."""
    future: Future[str] = Future()

    def run() -> None:
        try:
            future.set_result(check())
        except Exception as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="readyz", daemon=True).start()
    return future


def _database(url: str) -> str:
    with get_engine(url).connect() as conn:
        conn.execute(text("SELECT 1"))
    return "ok"


def _ray() -> str:
    alive = ray.is_initialized() and any(n["Alive"] for n in ray.nodes())
    return "ok" if alive else "no live node"
