"""The dashboard pages: studies, one study, one trial; and a login for token-protected
services, which gives the browser a signed session (service/auth.py) that the API also
accepts."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Body, Path, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from service.auth import authenticated, sessions, start_session
from service.errors import ApiError
from service.web._templates import PLOTLY_JS, STATIC, templates
from service.web._throttle import FailureLimiter
from service.web.security import FIGURE_POLICY, csrf_context
from studies import views
from studies.errors import StudyNotFoundError
from studies.plots import PLOTS, PlotSource
from studies.plots._sampling import best_first
from studies.store import Store, StudyRecord

router = APIRouter(include_in_schema=False)
SECTIONS = ("study", "init_check", "overfit", "lr_probe", "coarse", "refine", "confirm")
TOP_TRIALS = 20  # the study page lists the best trials; the API pages through the rest


def _page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    if not authenticated(request):
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    return templates().TemplateResponse(request, template, {**context, **csrf_context(request)},
                                        status_code=status,
                                        headers={"Content-Security-Policy": FIGURE_POLICY})


def safe_next(target: str) -> str:
    """`target` when it is a path on this service, else "/": no scheme (javascript:,
    data:), no other host (//host, /\\host, which browsers read as //host), no control
    or blank characters, which browsers drop before they parse."""
    if (not target.startswith("/") or target.startswith("//") or "\\" in target
            or any(unicodedata.category(c)[0] in "CZ" for c in target)):
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


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
    return templates().TemplateResponse(request, "login.html", {"next": safe_next(next)})


@router.post("/login")
def login(request: Request, token: Annotated[str, Body(embed=True)]) -> Response:
    """Check a token and start a session for the pages and their API calls; a client
    that failed too often lately gets 429 and is told when to try again."""
    limiter: FailureLimiter = request.app.state.login_limiter
    client = request.client.host if request.client else "unknown"
    wait = limiter.retry_after(client)
    if wait:
        raise ApiError(429, f"too many failed logins: try again in {wait} s",
                       {"Retry-After": str(wait)})
    known = sessions(request)
    if not known.required:  # an open service: there is nothing to log in to
        return Response(status_code=204)
    if not known.token_valid(token):
        limiter.failed(client)
        raise ApiError(401, "that token is not one of STAGETUNE_API_TOKENS")
    response = Response(status_code=204)
    start_session(request, response, token)
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
