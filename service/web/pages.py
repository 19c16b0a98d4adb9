"""The dashboard pages: studies, one study, one trial; and a login for token-protected
services (the token is kept in an HttpOnly cookie that the API also accepts)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from service.auth import TOKEN_COOKIE, token_ok
from service.errors import ApiError
from service.web._templates import PLOTLY_JS, STATIC, templates
from studies import views
from studies.errors import StudyNotFoundError
from studies.plots import PLOTS, PlotSource
from studies.plots._sampling import best_first
from studies.store import Store, StudyRecord

router = APIRouter(include_in_schema=False)
SECTIONS = ("study", "init_check", "overfit", "lr_probe", "coarse", "refine", "confirm")
TOP_TRIALS = 20  # the study page lists the best trials; the API pages through the rest


def _page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    if not token_ok(request):
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
    return templates().TemplateResponse(request, template, context, status_code=status)


def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


@router.get("/", response_class=HTMLResponse)
def studies_page(request: Request) -> Response:
    records, total = _store(request).list_studies(limit=100)
    rows = [views.summary(_store(request), r) for r in records]
    return _page(request, "studies.html", studies=rows, total=total)


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(request: Request, study_id: str) -> Response:
    store = _store(request)
    try:
        record = store.study(study_id)
    except StudyNotFoundError as exc:
        return _page(request, "not_found.html", 404, message=str(exc))
    detail = views.detail(store, record)
    sections = {s: [k for k in PLOTS.values() if k.section == s] for s in SECTIONS}
    return _page(request, "study.html", study=detail, sections=sections,
                 stages={s["name"]: s for s in detail["stages"]},
                 top=_top_trials(store, record))


def _top_trials(store: Store, record: StudyRecord) -> list[dict[str, Any]]:
    numbered = list(views.all_trials(store, record.name))
    where = {id(t): (n, stage) for n, stage, t in numbered}
    ranked = best_first([t for _, _, t in numbered], PlotSource(store, record).objective[1])
    return [views.trial_row(*where[id(t)], t) for t in ranked[:TOP_TRIALS]]


@router.get("/studies/{study_id}/trials/{number}", response_class=HTMLResponse)
def trial_page(request: Request, study_id: str, number: Annotated[int, Path(ge=0)]) -> Response:
    try:
        trial = views.trial_detail(_store(request), study_id, number)
    except StudyNotFoundError as exc:
        return _page(request, "not_found.html", 404, message=str(exc))
    metrics = sorted({k for epoch in trial["curves"] for k in epoch if k != "epoch"})
    return _page(request, "trial.html", study_id=study_id, trial=trial, metrics=metrics)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> Response:
    return templates().TemplateResponse(request, "login.html", {"next": next})


@router.post("/login")
def login(request: Request, token: Annotated[str, Body(embed=True)]) -> Response:
    """Check a token and keep it in a cookie for the pages and their API calls."""
    if not token_ok(request, token):
        raise ApiError(401, "that token is not one of STAGETUNE_API_TOKENS")
    response = Response(status_code=204)
    response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
    return response


@router.get("/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    """plotly.js from the installed plotly package: the pages load nothing from outside."""
    return FileResponse(PLOTLY_JS, media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    path = STATIC / name
    if path.parent != STATIC or not path.is_file():
        raise ApiError(404, f"no static file '{name}'")
    return FileResponse(path)
