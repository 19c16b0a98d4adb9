"""The figures of the budget and of successive halving: planned against spent per stage,
and how many configurations each coarse rung saw and passed on."""

from __future__ import annotations

import plotly.graph_objects as go

from stagetune.studies.reporting.numbers import sig
from stagetune.studies.reporting.plots._registry import note, register_plot
from stagetune.studies.reporting.plots._source import PlotSource
from stagetune.studies.search.stages._coarse import rung_table


@register_plot("budget", "Budget: planned against spent", "study",
               "Epochs the plan gave each stage (grey) and what it spent (blue); a stage may "
               "use what earlier stages left, never what later ones were planned.")
def budget(source: PlotSource) -> go.Figure:
    stages = [s for s in source.record.stages if s.planned or s.epochs]
    if not stages:
        return note("No stage has been planned or has spent anything yet.")
    names = [s.name for s in stages]
    planned = [(s.planned or {}).get("epochs") for s in stages]
    figure = go.Figure()
    figure.add_bar(x=names, y=[p or 0 for p in planned], name="planned", marker_color="#cfd8dc",
                   text=["" if p is None else sig(p) for p in planned])
    figure.add_bar(x=names, y=[s.epochs for s in stages], name="spent", marker_color="#1565c0",
                   text=[sig(s.epochs) for s in stages])
    total = (source.record.spec.get("budget") or {}).get("epochs")
    title = "Epochs planned and spent per stage"
    if total:
        title += (f": {sig(sum(s.epochs for s in source.record.stages))} of a budget of "
                  f"{total:g} spent")
    figure.update_layout(title=title, barmode="group", yaxis_title="epochs", height=340)
    return figure


@register_plot("coarse_rungs", "Successive-halving rungs", "coarse",
               "Per rung (an epoch count): configurations that reached it, and those the "
               "pruner let go on to the next.")
def coarse_rungs(source: PlotSource) -> go.Figure:
    stage = source.stage("coarse")
    levels = ((stage.planned or {}).get("sizes", {}) if stage else {}).get("rungs")
    trials = source.trials("coarse")
    if not levels or not trials:
        return note("Coarse has not run a trial yet.")
    rows = rung_table(list(trials), levels, source.objective[1])
    labels = [f"epoch {r['epoch']}" for r in rows]
    figure = go.Figure()
    figure.add_bar(x=labels, y=[r["reached"] for r in rows], name="reached the rung",
                   marker_color="#90a4ae", text=[r["reached"] for r in rows])
    figure.add_bar(x=labels, y=[r["promoted"] or 0 for r in rows], name="promoted to the next",
                   marker_color="#2e7d32",
                   text=["" if r["promoted"] is None else r["promoted"] for r in rows])
    best = [f"best {sig(r['best'])}" if r["best"] is not None else "" for r in rows]
    figure.update_layout(title="coarse: configurations per rung (" + "; ".join(
        f"{lbl}: {b}" for lbl, b in zip(labels, best, strict=True) if b) + ")",
        barmode="group", yaxis_title="configurations", height=340)
    return figure
