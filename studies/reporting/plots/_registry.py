"""The plot kinds: each is a function from a study's data to a Plotly figure, registered
under a name that the API (`/api/studies/{id}/plots/{kind}`), the pages and the report
share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from stagetune.studies.errors import StudyNotFoundError
from stagetune.studies.reporting.plots._axes import readable_log_axes
from stagetune.studies.reporting.plots._source import PlotSource
from stagetune.workers.errors import ConfigError

PlotFunction = Callable[..., go.Figure]


class UnknownPlotError(StudyNotFoundError):
    """A plot kind nobody registered (the API answers 404 with the known ones)."""


@dataclass(frozen=True)
class PlotKind:
    name: str
    title: str
    section: str  # the study page's section it belongs to (a stage name, or "study")
    caption: str  # one sentence saying what to look for
    function: PlotFunction
    per_trial: bool = False  # drawn for one trial (`number=`), not on the study page
    only_if: Callable[[dict[str, Any]], bool] | None = None  # drawn for the specs it accepts


PLOTS: dict[str, PlotKind] = {}


def register_plot(name: str, title: str, section: str, caption: str, per_trial: bool = False,
                  only_if: Callable[[dict[str, Any]], bool] | None = None
                  ) -> Callable[[PlotFunction], PlotFunction]:
    def add(function: PlotFunction) -> PlotFunction:
        if name in PLOTS:
            raise ConfigError(f"plot kind '{name}' is already registered")
        PLOTS[name] = PlotKind(name, title, section, caption, function, per_trial, only_if)
        return function

    return add


def kinds_for(spec: dict[str, Any]) -> list[PlotKind]:
    """The plot kinds a study with this (stored) spec shows, in registry order."""
    return [k for k in PLOTS.values() if k.only_if is None or k.only_if(spec)]


def plot_kind(name: str) -> PlotKind:
    if name not in PLOTS:
        raise UnknownPlotError(f"unknown plot kind '{name}'; known kinds: {', '.join(PLOTS)}")
    return PLOTS[name]


def create_plot(name: str, source: PlotSource, **options: Any) -> go.Figure:
    """The figure of kind `name` for the study behind `source`; a stage that has not run
    yet gives a figure that says so rather than an error."""
    figure = plot_kind(name).function(source, **options)
    # subplot titles are annotations: leave room for them under the figure's own title
    top = 90 if figure.layout.annotations and figure.layout.title.text else 50
    figure.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": top, "b": 50})
    return readable_log_axes(figure)


def note(text: str) -> go.Figure:
    """An empty figure carrying one sentence (a stage not run yet, nothing to draw)."""
    figure = go.Figure()
    figure.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                          font={"size": 14, "color": "#555"})
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    figure.update_layout(height=220)
    return figure
