"""Liveness and readiness, without auth (container health checks call them)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as Late

import ray
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from stagetune.service.schemas import Health
from stagetune.studies.store import get_engine

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)

READY_SECONDS = 1.5  # each check's answer time: a hung database is "not ready", quickly
# The checks run here so a hung one cannot hold the request. Its thread stays busy until
# the database answers; the next checks queue behind it and time out too, which is the
# truth: not ready. Two threads: the database and Ray are checked at the same time.
_checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readyz")


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(request: Request) -> JSONResponse:
    """The database answers and the Ray cluster is reachable, each within 1.5 s."""
    url = request.app.state.store.url
    pending = {"database": _checks.submit(_database, url), "ray": _checks.submit(_ray)}
    checks: dict[str, str] = {}
    for name, future in pending.items():
        try:
            checks[name] = future.result(timeout=READY_SECONDS)
        except Late:
            checks[name] = f"unreachable: no answer within {READY_SECONDS} s"
        except Exception as exc:  # any failure means not ready; the log keeps the detail
            log.warning("readyz: %s check failed: %s", name, exc)
            checks[name] = f"unreachable ({exc.__class__.__name__}); see the service log"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


def _database(url: str) -> str:
    with get_engine(url).connect() as conn:
        conn.execute(text("SELECT 1"))
    return "ok"


def _ray() -> str:
    alive = ray.is_initialized() and any(n["Alive"] for n in ray.nodes())
    return "ok" if alive else "no live node"
