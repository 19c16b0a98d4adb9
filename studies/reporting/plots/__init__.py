"""The dashboards' figures: a registry of plot kinds, each drawn from the store alone."""

# in the order the study page shows them
from stagetune.studies.reporting.plots import _probes, _budget, _search, _front, _curves, _gradcam  # noqa: F401, I001  (fill the registry)
from stagetune.studies.reporting.plots._compare import best_so_far, winners_curves, winners_parameters
from stagetune.studies.reporting.plots._registry import (
    PLOTS,
    PlotKind,
    UnknownPlotError,
    create_plot,
    kinds_for,
    plot_kind,
    register_plot,
)
from stagetune.studies.reporting.plots._source import PlotSource

__all__ = ["PLOTS", "PlotKind", "PlotSource", "UnknownPlotError", "best_so_far", "create_plot",
           "kinds_for", "plot_kind", "register_plot", "winners_curves", "winners_parameters"]
