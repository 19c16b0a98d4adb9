"""The REST API under /api, and the health checks beside it."""

from stagetune.service.api.health import router as health_router
from stagetune.service.api.plots import router as plots_router
from stagetune.service.api.registry import router as registry_router
from stagetune.service.api.results import router as results_router
from stagetune.service.api.studies import router as studies_router

__all__ = ["health_router", "plots_router", "registry_router", "results_router",
           "studies_router"]
