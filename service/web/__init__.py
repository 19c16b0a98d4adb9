"""The HTML dashboard: server-rendered pages (Jinja2) whose figures load from the plot API."""

from stagetune.service.web.pages import router as pages_router
from stagetune.service.web.report import render_report

__all__ = ["pages_router", "render_report"]
