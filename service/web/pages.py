"""The dashboard pages: studies, one study, one trial; and a login for token-protected
services, which gives the browser a signed session (service/auth.py) that the API also
accepts."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from markupsafe import Markup

from stagetune.service.api.deps import ReadCacheDep, SessionsDep, StoreDep
from stagetune.service.api.studies import cached_trials, select_trials
from stagetune.service.auth import authenticated, start_session
from stagetune.service.cache import ReadCache
from stagetune.service.schemas import TrialState
from stagetune.service.web._templates import PLOTLY_JS, STATIC, templates
from stagetune.service.web._throttle import FailureLimiter
from stagetune.service.web.security import FIGURE_POLICY, csrf_context
from stagetune.studies.errors import StudyNotFoundError
from stagetune.studies.reporting import views
from stagetune.studies.reporting.plots import (
    PlotSource,
    best_so_far,
    kinds_for,
    winners_curves,
    winners_parameters,
)
from stagetune.studies.spec import NAME_PATTERN
from stagetune.studies.store import Store

router = APIRouter(include_in_schema=False)
SECTIONS = ("study", "init_check", "overfit", "lr_probe", "coarse", "refine", "confirm")
TABLE_ROWS = 20  # the trial table's rows per page, unless the page is told otherwise
# which buttons a study's status offers (the API refuses the others with a 409)
ACTIONS = {"cancel": ("pending", "running"), "resume": ("failed", "cancelled"),
           "delete": ("completed", "stopped", "cancelled", "failed")}


def _page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    if not authenticated(request):
        return _to_login(request)
    return templates().TemplateResponse(request, template, {**context, **csrf_context(request)},
                                        status_code=status,
                                        headers={"Content-Security-Policy": FIGURE_POLICY})


def _to_login(request: Request) -> Response:
    """To the login, and back to this page (its query too) after it."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(here)}", status_code=303)


def safe_next(target: str) -> str:
    """`target` when it is a path on this service, else "/": no scheme (javascript:,
    data:), no other host (//host, /\\host, which browsers read as //host), no control
    or blank characters, which browsers drop before they parse, and no path that the
    browser's removal of dot segments turns into //host (/.//host, /%2e//host)."""
    if (not target.startswith("/") or target.startswith("//") or "\\" in target
            or any(unicodedata.category(c)[0] in "CZ" for c in target)):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or _without_dots(parts.path).startswith("//"):
        return "/"
    return target


def _without_dots(path: str) -> str:
    """The path as a browser resolves it (the URL Standard's path parsing): `.` and `..`
    segments, also spelled %2e, removed."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        dots = segment.lower().replace("%2e", ".")
        last = i == len(segments) - 1
        if dots == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif dots == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


@router.get("/", response_class=HTMLResponse)
def studies_page(request: Request, store: StoreDep) -> Response:
    records, total = store.list_studies(limit=100)
    rows = [views.summary(store, r) for r in records]
    return _page(request, "studies.html", studies=rows, total=total)


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(request: Request, store: StoreDep, cache: ReadCacheDep, study_id: str,
               stage: views.TrialStage | None = None,
               state: TrialState | None = None, q: Annotated[str, Query(max_length=500)] = "",
               sort: Annotated[str, Query(max_length=200)] = "value",
               order: Literal["asc", "desc"] | None = None,
               offset: Annotated[int, Query(ge=0)] = 0,
               limit: Annotated[int, Query(ge=1, le=500)] = TABLE_ROWS) -> Response:
    """The study, and a page of its trial table (best first unless told): the page's
    script then sorts, filters and pages it through the API, without reloading."""
    if not authenticated(request):
        return _to_login(request)
    try:
        record = store.study(study_id)
    except StudyNotFoundError as exc:
        return _page(request, "not_found.html", 404, message=str(exc))
    detail = views.detail(store, record)
    sections = {s: [k for k in kinds_for(record.spec) if k.section == s] for s in SECTIONS}
    table = _trial_table(store, cache, study_id, PlotSource(store, record).objective[1],
                         {"stage": stage, "state": state, "q": q, "sort": sort, "order": order},
                         offset, limit)
    return _page(request, "study.html", study=detail, sections=sections,
                 stages={s["name"]: s for s in detail["stages"]}, table=table,
                 actions=ACTIONS)


def _trial_table(store: Store, cache: ReadCache, study_id: str, direction: str,
                 query: dict[str, Any], offset: int, limit: int) -> dict[str, Any]:
    """The table's first rows as the server draws them; the value sorts best first."""
    query["order"] = query["order"] or ("desc" if query["sort"] == "value"
                                        and direction == "maximize" else "asc")
    table: dict[str, Any] = {"query": {**query, "offset": offset, "limit": limit},
                             "direction": direction, "error": "", "rows": [], "total": 0,
                             "params": views.parameter_names(cached_trials(store, cache, study_id))}
    try:
        picked = select_trials(store, cache, study_id, **query)
    except RequestValidationError as exc:  # a bad sort or filter in the page's address
        table["error"] = "; ".join(e["msg"] for e in exc.errors())
        return table
    table.update(rows=[views.trial_row(*t) for t in picked[offset:offset + limit]],
                 total=len(picked))
    return table


MAX_COMPARED = 8  # a legend and a table that stay readable


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, store: StoreDep,
                 studies: Annotated[list[str], Query(max_length=1000)] = []) -> Response:  # noqa: B006 (FastAPI copies it)
    """Two to MAX_COMPARED studies side by side: `?studies=a,b` (or `studies` repeated)."""
    if not authenticated(request):
        return _to_login(request)
    names = list(dict.fromkeys(n.strip() for given in studies for n in given.split(",")
                               if n.strip()))
    problem = next((f"'{n[:80]}' is not a study name (letters, digits, _ and -)"
                    for n in names if not re.fullmatch(NAME_PATTERN, n)), None)
    if problem is None and not 2 <= len(names) <= MAX_COMPARED:
        problem = (f"compare 2 to {MAX_COMPARED} studies, e.g. /compare?studies=a,b "
                   f"({len(names)} given)")
    if problem is not None:
        return _page(request, "compare.html", 400, error=problem, names=names)
    try:
        sources = [PlotSource.load(store, name) for name in names]
    except StudyNotFoundError as exc:
        return _page(request, "not_found.html", 404, message=str(exc))
    figures = {"best_so_far": best_so_far(sources), "winners": winners_curves(sources)}
    embedded = {k: Markup(f.update_layout(template="plotly_white").to_json().replace("</", "<\\/"))
                for k, f in figures.items()}
    return _page(request, "compare.html", names=names, figures=embedded,
                 table=winners_parameters(sources))


@router.get("/studies/{study_id}/trials/{number}", response_class=HTMLResponse)
def trial_page(request: Request, store: StoreDep, study_id: str,
               number: Annotated[int, Path(ge=0)]) -> Response:
    try:
        trial = views.trial_detail(store, study_id, number)
    except StudyNotFoundError as exc:
        return _page(request, "not_found.html", 404, message=str(exc))
    metrics = sorted({k for epoch in trial["curves"] for k in epoch if k != "epoch"})
    return _page(request, "trial.html", study_id=study_id, trial=trial, metrics=metrics)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> Response:
    return templates().TemplateResponse(request, "login.html", {"next": safe_next(next)})


def login_limiter(request: Request) -> FailureLimiter:
    """The failed logins per client (service/web/security.py fills it in)."""
    return request.app.state.login_limiter  # type: ignore[no-any-return]


@router.post("/login")
def login(request: Request, token: Annotated[str, Body(embed=True)],
          limiter: Annotated[FailureLimiter, Depends(login_limiter)],
          known: SessionsDep) -> Response:
    """Check a token and start a session for the pages and their API calls; a client
    that failed too often lately gets 429 and is told when to try again."""
    # the peer, or the client a proxy of STAGETUNE_FORWARDED_ALLOW_IPS names (uvicorn's)
    client = request.client.host if request.client else "unknown"
    wait = limiter.retry_after(client)
    if wait:
        raise HTTPException(429, f"too many failed logins: try again in {wait} s",
                       {"Retry-After": str(wait)})
    if not known.required:  # an open service: there is nothing to log in to
        return Response(status_code=204)
    if not known.token_valid(token):
        limiter.failed(client)
        raise HTTPException(401, "that token is not one of STAGETUNE_API_TOKENS")
    response = Response(status_code=204)
    start_session(request, response, token)
    return response


@router.get("/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    """plotly.js from the installed plotly package: the pages load nothing from outside."""
    return FileResponse(PLOTLY_JS, media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})


router.mount("/static", StaticFiles(directory=STATIC), name="static")
