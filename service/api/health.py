"""Liveness and readiness, without auth (container health checks call them)."""

from __future__ import annotations

import ray
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from service.schemas import Health
from studies.store import get_engine

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(request: Request) -> JSONResponse:
    """The database answers and the Ray cluster is reachable."""
    checks: dict[str, str] = {}
    try:
        with get_engine(request.app.state.store.url).connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; say which
        checks["database"] = f"unreachable: {str(exc).splitlines()[0]}"
    try:
        alive = ray.is_initialized() and any(n["Alive"] for n in ray.nodes())
        checks["ray"] = "ok" if alive else "no live node"
    except Exception as exc:
        checks["ray"] = f"unreachable: {exc}"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
