"""Every dashboard figure as Plotly JSON, and the study as one self-contained HTML report."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import HTMLResponse

from stagetune.service.api.deps import FiguresDep, StoreDep
from stagetune.service.schemas import Message, PlotInfo
from stagetune.service.web.report import render_report
from stagetune.studies.reporting.plots import PLOTS, kinds_for

router = APIRouter(tags=["plots"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Message}}


@router.get("/studies/{study_id}/plots", response_model=list[PlotInfo], responses=NOT_FOUND)
def list_plots(store: StoreDep, study_id: str) -> list[PlotInfo]:
    """The plot kinds this study shows, with what each shows and where to fetch it."""
    record = store.study(study_id)  # 404 for an unknown study
    return [PlotInfo(kind=k.name, title=k.title, section=k.section, caption=k.caption,
                     per_trial=k.per_trial, url=f"/api/studies/{study_id}/plots/{k.name}")
            for k in kinds_for(record.spec)]


@router.get("/studies/{study_id}/plots/{kind}", responses={
    200: {"content": {"application/json": {}}, "description": "a Plotly figure (data, layout)"},
    **NOT_FOUND})
def get_plot(store: StoreDep, figures: FiguresDep, study_id: str, kind: str,
             number: Annotated[int | None, Query(ge=0, description="the trial, for kind "
                                                 "'trial'")] = None) -> Response:
    """One figure as Plotly JSON (`Plotly.newPlot(div, fig.data, fig.layout)` draws it).
    A stage that has not run yet gives a figure that says so."""
    options = {"number": number} if PLOTS.get(kind) and PLOTS[kind].per_trial else {}
    body = figures.get(store, study_id, kind, **options)
    return Response(body, media_type="application/json")


@router.get("/studies/{study_id}/report.html", response_class=HTMLResponse, responses=NOT_FOUND)
def report(store: StoreDep, figures: FiguresDep, study_id: str) -> HTMLResponse:
    """The study as one HTML file that opens offline (plotly.js inside)."""
    html = render_report(store, study_id, figures)
    return HTMLResponse(html, headers={
        "Content-Disposition": f'inline; filename="{study_id}-report.html"'})
