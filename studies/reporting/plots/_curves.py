"""Learning curves: the top trials overlaid, the confirm stage's seed spread, the winner's
diagnosis, and one trial's every curve. Curves are read for the chosen trials only."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from optuna.trial import TrialState
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from stagetune.studies.errors import StudyNotFoundError
from stagetune.studies.reporting.numbers import readable, sig
from stagetune.studies.reporting.plots._registry import note, register_plot
from stagetune.studies.reporting.plots._sampling import TOP_CURVES, best_first, thin
from stagetune.studies.reporting.plots._source import PlotSource
from stagetune.studies.reporting.views import all_trials

COLOURS = qualitative.Plotly


def _panels(objective: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The metrics drawn on the loss panel and on the objective panel."""
    if objective.endswith("accuracy"):
        return ("train_loss", "val_loss"), ("train_accuracy", "val_accuracy")
    return ("train_loss", "val_loss"), (objective,)


def _add_curve(figure: go.Figure, epochs: list[dict[str, Any]], metric: str, label: str,
               colour: str, legend: bool, row: int = 1, col: int = 1) -> None:
    points = [(m["epoch"], m[metric]) for m in epochs if isinstance(m.get(metric), (int, float))
              and math.isfinite(m[metric])]
    if not points:
        return
    keep = thin([p[1] for p in points])
    figure.add_scatter(x=[points[i][0] for i in keep], y=[points[i][1] for i in keep],
                       mode="lines", name=label, legendgroup=label, showlegend=legend,
                       line={"color": colour, "dash": "dot" if metric.startswith("train") else
                             "solid"}, hovertemplate=f"{label}<br>{metric} %{{y:.4g}}<br>"
                       "epoch %{x}<extra></extra>", row=row, col=col)


def _baseline(figure: go.Figure, source: PlotSource, col: int) -> None:
    baseline = source.handed.get("baseline")
    if isinstance(baseline, (int, float)) and math.isfinite(baseline):
        figure.add_hline(y=baseline, line_dash="dash", line_color="#6d4c41", row=1, col=col,
                         annotation_text="linear baseline")


@register_plot("learning_curves", "Learning curves of the top trials", "study",
               "Dotted: training; solid: validation. A widening gap is overfitting; curves "
               "still falling at the end want more epochs.")
def learning_curves(source: PlotSource) -> go.Figure:
    objective, direction = source.objective
    stage = next((s for s in ("refine", "coarse") if best_first(source.trials(s), direction)),
                 None)
    if stage is None:
        return note("No search trial has completed yet.")
    top = best_first(source.trials(stage), direction)[:TOP_CURVES]
    curves = source.curves(stage, [t.number for t in top])
    losses, scores = _panels(objective)
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", objective))
    for i, trial in enumerate(top):
        label, colour = f"{stage} #{trial.number} ({readable(trial.value)})", COLOURS[i % len(COLOURS)]
        for col, metrics in ((1, losses), (2, scores)):
            for metric in metrics:
                _add_curve(figure, curves.get(trial.number, []), metric, label, colour,
                           legend=col == 1 and metric == metrics[-1], col=col)
    _baseline(figure, source, 2)
    figure.update_xaxes(title="epoch")
    figure.update_layout(title=f"The {len(top)} best {stage} trials: training against validation",
                         height=440, legend={"font": {"size": 10}})
    return figure


@register_plot("confirm_spread", "Seed spread", "confirm",
               "Each configuration's objective over several seeds: the winner has the best "
               "mean; a wide spread means the search's ranking was luck.")
def confirm_spread(source: PlotSource) -> go.Figure:
    runs = [t for t in source.trials("confirm") if t.state == TrialState.COMPLETE]
    if not runs:
        return note("No confirm run has finished yet.")
    by_config: dict[int, list[Any]] = {}
    for t in runs:
        by_config.setdefault(int(t.user_attrs.get("config", 0)), []).append(t)
    stage = source.stage("confirm")
    winner = stage.figures.get("winner") if stage else None
    figure = go.Figure()
    for index, trials in sorted(by_config.items()):
        params = ", ".join(f"{k}={readable(v)}"
                           for k, v in sorted(trials[0].params.items()))
        figure.add_box(y=[t.value for t in trials], name=f"config {index}"
                       + (" (winner)" if index == winner else ""), boxpoints="all",
                       jitter=0.3, pointpos=0, hovertext=[f"seed {t.user_attrs.get('seed')}: "
                                                          f"{sig(t.value)}<br>{params}"
                                                          for t in trials], hoverinfo="text",
                       marker_color="#2e7d32" if index == winner else "#1565c0")
    baseline = source.handed.get("baseline")
    if isinstance(baseline, (int, float)) and math.isfinite(baseline):
        figure.add_hline(y=baseline, line_dash="dash", line_color="#6d4c41",
                         annotation_text="linear baseline")
    figure.update_layout(title="confirm: the top configurations over seeds", showlegend=False,
                         yaxis_title=source.objective[0], height=400)
    return figure


@register_plot("diagnosis", "The winner's curves, diagnosed", "confirm",
               "The winner's median-seed run, with what its curves show and what to try.")
def diagnosis(source: PlotSource) -> go.Figure:
    stage = source.stage("confirm")
    if stage is None or "diagnosis" not in stage.figures:
        return note("The diagnosis comes when confirm finishes.")
    found = stage.figures["diagnosis"]
    number = stage.figures["median_trial"]
    epochs = source.curves("confirm", [number]).get(number, [])
    objective = source.objective[0]
    losses, scores = _panels(objective)
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", objective))
    for col, metrics in ((1, losses), (2, scores)):
        for i, metric in enumerate(metrics):
            _add_curve(figure, epochs, metric, metric, COLOURS[i], legend=True, col=col)
    _baseline(figure, source, 2)
    figure.update_xaxes(title="epoch")
    figure.update_layout(title=f"The winner's median-seed run: {found['kind'].replace('_', ' ')}",
                         height=440)
    return figure


@register_plot("trial", "One trial's curves", "trial",
               "Every per-epoch metric of one trial.", per_trial=True)
def trial(source: PlotSource, number: int | None = None) -> go.Figure:
    if number is None:
        raise StudyNotFoundError("the trial plot needs a trial: add ?number=N")
    found = next(((stage, t) for n, stage, t in all_trials(source.store, source.name)
                  if n == number), None)
    if found is None:
        raise StudyNotFoundError(f"study '{source.name}' has no trial {number}")
    stage, frozen = found
    epochs = source.curves(stage, [frozen.number]).get(frozen.number, [])
    if not epochs:
        return note(f"Trial {number} has reported no epoch yet.")
    losses, scores = _panels(source.objective[0])
    panels = [("loss", losses), (source.objective[0], scores), ("learning rate", ("lr",)),
              ("gradient norm", ("grad_norm",))]
    figure = make_subplots(rows=2, cols=2, subplot_titles=[p[0] for p in panels])
    for k, (_, metrics) in enumerate(panels):
        for i, metric in enumerate(metrics):
            _add_curve(figure, epochs, metric, metric, COLOURS[(2 * k + i) % len(COLOURS)],
                       legend=True, row=k // 2 + 1, col=k % 2 + 1)
    figure.update_xaxes(title="epoch", row=2)
    figure.update_layout(title=f"Trial {number} ({stage} #{frozen.number}): "
                         f"{frozen.state.name.lower()}", height=560)
    return figure
