"""/docs (Swagger UI) and /redoc from the files that the fastapi-offline package ships, so
that, like the pages, they load nothing from another host. FastAPI's own pages would load
both from a CDN, and Swagger UI's from an inline script, which the pages' policy forbids."""

from __future__ import annotations

import functools
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse

from stagetune.service.web._templates import templates
from stagetune.service.web.security import csrf_context

router = APIRouter(include_in_schema=False)
ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSET_TYPES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
               "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


def _docs_page(request: Request, template: str) -> Response:
    context = {"title": request.app.title, "openapi_url": request.app.openapi_url,
               **csrf_context(request)}
    return templates().TemplateResponse(request, template, context)


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> Response:
    return _docs_page(request, "docs.html")


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> Response:
    return _docs_page(request, "redoc.html")


@router.get("/docs/assets/{name}")
def asset(name: str) -> Response:
    if name not in ASSET_TYPES:
        raise HTTPException(404, f"no documentation asset '{name}'")
    cache = {"Cache-Control": "public, max-age=86400"}
    if name == "redoc.standalone.js":
        return Response(_redoc_js(), media_type=ASSET_TYPES[name], headers=cache)
    return FileResponse(ASSETS / name, media_type=ASSET_TYPES[name], headers=cache)


@functools.cache
def _redoc_js() -> bytes:
    """ReDoc's bundle, less the one thing it fetches from its CDN: the logo in its sidebar,
    which hides itself when its image does not load."""
    return (ASSETS / "redoc.standalone.js").read_bytes().replace(REDOC_LOGO, b"data:,")
