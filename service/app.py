"""The FastAPI app: the REST API under /api, the dashboard pages, health checks, and the
runner supervisor."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import optuna
import ray
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from stagetune.service import errors
from stagetune.service.api import (
    health_router,
    plots_router,
    registry_router,
    results_router,
    studies_router,
)
from stagetune.service.auth import SECURED
from stagetune.service.cache import ReadCache
from stagetune.service.cluster_view import ClusterView
from stagetune.service.figures import FigureCache
from stagetune.service.logs import configure_logging
from stagetune.service.metrics import install_metrics
from stagetune.service.metrics import router as metrics_router
from stagetune.service.settings import Settings, get_settings
from stagetune.service.supervisor import Supervisor
from stagetune.service.web import pages_router
from stagetune.service.web._hosts import warn_if_any_host
from stagetune.service.web.docs import router as docs_router
from stagetune.service.web.security import install_security
from stagetune.studies.reporting.study_end import Hooks, hook_actor
from stagetune.studies.run.cluster import connect
from stagetune.studies.store import Store, fail_fast
from stagetune.workers import sidecar

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None,
               on_ready: Callable[[FastAPI], None] | None = None) -> FastAPI:
    """The app; `on_ready(app)` runs once the store, Ray and the supervisor are up."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)  # after uvicorn's own set-up, which it adjusts
        warn_if_any_host(settings)
        # the plugins and the registries load in the worker-code child, not here: this
        # process imports no torch (workers/sidecar.py); a broken plugin still fails now
        sidecar.start()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # figures build in-memory studies
        store = Store(settings.database_url)  # runs the migrations, waiting for the database
        fail_fast()  # from here on a request gets a 503 at once while the database is away
        connect(settings.ray_address)
        app.state.cluster = ClusterView()  # what submit checks a spec's resources against
        app.state.cluster.start()
        if Hooks.from_settings(settings).any:
            hook_actor()  # up before any study ends: see studies/reporting/study_end.py
        # resumes running studies whose runner is gone; starts pending ones as the limit allows
        supervisor = Supervisor(store, max_running=settings.max_running_studies)
        supervisor.start()
        app.state.store, app.state.supervisor = store, supervisor
        if on_ready is not None:
            on_ready(app)
        yield
        supervisor.stop()  # runners are detached: on a shared cluster they go on
        app.state.cluster.stop()
        ray.shutdown()
        sidecar.stop()

    app = FastAPI(title="stagetune", summary="Staged hyperparameter search for PyTorch",
                  version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # served from local files: service/web/docs.py
    app.state.settings = settings
    app.state.read_cache = ReadCache()
    app.state.figures = FigureCache()
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    install_security(app, settings)  # CSRF guard and security headers, outside BodyLimit
    install_metrics(app)  # outermost: counts every answer, the guards' refusals too
    secured = SECURED
    app.include_router(studies_router, prefix="/api", dependencies=secured)
    app.include_router(results_router, prefix="/api", dependencies=secured)
    app.include_router(registry_router, prefix="/api", dependencies=secured)
    app.include_router(plots_router, prefix="/api", dependencies=secured)
    app.include_router(metrics_router, dependencies=secured)  # a scraper sends a token too
    app.include_router(health_router)
    app.include_router(pages_router)  # pages check the token themselves: a login, not a 401
    app.include_router(docs_router)
    return app


class BodyLimit:
    """413 for a body whose Content-Length is over the limit, before it is read
    (a chunked body is measured by the endpoint that reads it)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > self.max_bytes:
                detail: Any = (f"the body is over {self.max_bytes} bytes" if length.isdigit()
                               else "Content-Length must be a number of bytes")
                status = 413 if length.isdigit() else 400
                await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)
