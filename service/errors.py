"""Every error a client can cause, mapped to its status in one place; never a 500."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from studies.errors import StoreError, StudyConflictError, StudyNotFoundError
from studies.spec import SpecError
from workers import StagetuneError


class ApiError(Exception):
    """An error with its HTTP status, raised by the endpoints themselves."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(SpecError)
    async def _spec(_: Request, exc: SpecError) -> JSONResponse:
        # shaped like FastAPI's own 422s: one entry per problem, with the field's path
        detail = [{"loc": ["body", *[p for p in where.split(".") if p]], "msg": what,
                   "type": "spec"} for where, what in exc.problems]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StudyNotFoundError)
    async def _not_found(_: Request, exc: StudyNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(StudyConflictError)
    async def _conflict(_: Request, exc: StudyConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": f"the store is unavailable: {exc}"}, status_code=503)

    @app.exception_handler(StagetuneError)
    async def _input(_: Request, exc: StagetuneError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)
