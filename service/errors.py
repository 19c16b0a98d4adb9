"""Every error a client can cause, mapped to its status in one place; never a 500."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from optuna.artifacts.exceptions import ArtifactNotFound
from starlette.exceptions import HTTPException as StarletteHTTPException

from stagetune.service.schemas import Message, ValidationErrors
from stagetune.studies.errors import SpecError, StoreError, StudyConflictError, StudyNotFoundError
from stagetune.studies.spec.schema import spec_components
from stagetune.workers import StagetuneError
from stagetune.workers.sidecar import WorkerCodeTimeout


def install(app: FastAPI) -> None:
    @app.exception_handler(SpecError)
    async def _spec(_: Request, exc: SpecError) -> JSONResponse:
        # shaped like FastAPI's own 422s: one entry per problem, with the field's path
        detail = [{"loc": ["body", *[p for p in where.split(".") if p]], "msg": what or where,
                   "type": "spec"} for where, what in exc.problems]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(ArtifactNotFound)
    async def _artifact_missing(_: Request, exc: ArtifactNotFound) -> JSONResponse:
        # written by Ray nodes whose data folder this service does not see; no path named
        return JSONResponse({"detail": "the study's stored weights are not in this service's "
                             "data folder: the service and the Ray nodes that ran the study "
                             "must share STAGETUNE_DATA_DIR"}, status_code=404)

    @app.exception_handler(StudyNotFoundError)
    async def _not_found(_: Request, exc: StudyNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(StudyConflictError)
    async def _conflict(_: Request, exc: StudyConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> JSONResponse:
        # the message names no URL or driver text; the log has them (studies.store)
        return JSONResponse({"detail": f"the store is unavailable: {exc}"}, status_code=503)

    @app.exception_handler(WorkerCodeTimeout)
    async def _worker_code(_: Request, exc: WorkerCodeTimeout) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(StagetuneError)
    async def _input(_: Request, exc: StagetuneError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's, and the router's own 404/405
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        allowed = _methods(request.app, request.url.path) if exc.status_code == 405 else []
        if allowed:  # Starlette's Allow names the methods of the first matching route only
            return JSONResponse({"detail": exc.detail}, status_code=405,
                                headers={**(exc.headers or {}), "Allow": ", ".join(allowed)})
        return await http_exception_handler(request, exc)

    _document(app)


def _methods(app: FastAPI, path: str) -> list[str]:
    """Every documented method of the operations whose path template matches `path`."""
    parts = path.rstrip("/").split("/")
    found = set()
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = template.rstrip("/").split("/")
        if len(pattern) == len(parts) and all(
                p == q or (p.startswith("{") and p.endswith("}") and q)
                for p, q in zip(pattern, parts, strict=True)):
            found |= {m.upper() for m in operations if m in _HTTP_METHODS}
    return sorted(found)


_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _document(app: FastAPI) -> None:
    """Add to the OpenAPI schema what FastAPI cannot see: what the handlers above answer on
    any operation (401 where the bearer token is checked, 422 where input is read: FastAPI
    documents 422 only for parameters it parses itself), and the study spec's schema, which
    `POST /api/studies` reads from its raw body (JSON or YAML)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (Message, ValidationErrors):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(model_schema.pop("$defs", {}))
                schemas.setdefault(model.__name__, model_schema)
            _add_components(schemas, spec_components())
            secured = bool(app.state.settings.tokens)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    _add_statuses(operation, secured)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _add_components(schemas: dict[str, Any], added: dict[str, Any]) -> None:
    clash = sorted(name for name in added if schemas.get(name, added[name]) != added[name])
    if clash:  # two models of one name: a reference would point at the wrong one
        raise RuntimeError(f"OpenAPI components defined twice, differently: {', '.join(clash)}")
    schemas.update(added)


def _add_statuses(operation: dict[str, Any], secured: bool) -> None:
    """`secured`: the service has tokens. Without, no operation asks for one or answers 401."""
    responses = operation.setdefault("responses", {})
    if operation.get("security") and secured:
        responses.setdefault("401", _response("Message", "No valid bearer token (or login "
                                              "cookie) was sent"))
    elif not secured:
        operation.pop("security", None)
    if operation.get("parameters") or operation.get("requestBody"):
        responses.setdefault("422", _response(
            "ValidationErrors", "The input breaks a rule: one entry per problem, with its field"))
    for response in responses.values():  # an HTML operation's errors are JSON all the same
        content = response.get("content", {})
        for media in [m for m in content if m != "application/json"]:
            if "Message" in str(content[media].get("schema", {}).get("$ref", "")):
                content.setdefault("application/json", content.pop(media))


def _response(model: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}
