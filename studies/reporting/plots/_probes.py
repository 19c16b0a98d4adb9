"""The figures of the stages before any search: the timeline and the three probes."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from stagetune.studies.reporting.numbers import sig
from stagetune.studies.reporting.plots._registry import note, register_plot
from stagetune.studies.reporting.plots._sampling import thin
from stagetune.studies.reporting.plots._source import PlotSource
from stagetune.studies.reporting.views import utc

VERDICT_COLOURS = {"passed": "#2e7d32", "warned": "#ef6c00", "failed": "#c62828",
                   "skipped": "#9e9e9e", None: "#1565c0"}  # None: running or not yet judged


@register_plot("timeline", "Stage timeline", "study",
               "Each stage from start to finish, coloured by its verdict; hover for its sentence.")
def timeline(source: PlotSource) -> go.Figure:
    figure = go.Figure()
    now = datetime.now(UTC)
    for stage in source.record.stages:
        if stage.started_at is None:
            continue
        start = utc(stage.started_at)
        end = utc(stage.finished_at) or now
        verdict = stage.verdict if stage.status == "done" else None
        figure.add_bar(y=[stage.name], base=[start.isoformat()], orientation="h",
                       x=[max((end - start).total_seconds() * 1000, 50)],
                       marker_color=VERDICT_COLOURS.get(verdict, "#1565c0"),
                       name=verdict or stage.status, showlegend=False,
                       text=[verdict or stage.status], textposition="inside",
                       hovertext=[f"{stage.name}: {verdict or stage.status}<br>"
                                  f"{_wrap(stage.message)}"], hoverinfo="text")
    if not figure.data:
        return note("No stage has started yet.")
    order = [s.name for s in source.record.stages]
    figure.update_yaxes(categoryorder="array", categoryarray=order[::-1])
    figure.update_xaxes(type="date", title="time (UTC)")
    figure.update_layout(title="Stages and their verdicts", barmode="overlay",
                         height=120 + 28 * len(order))
    return figure


@register_plot("init_loss", "Initial loss", "init_check",
               "The loss before any update against the expected one; the band is a pass.")
def init_loss(source: PlotSource) -> go.Figure:
    stage = source.stage("init_check")
    if stage is None or "loss" not in stage.figures:
        return note("The init check has not run.")
    f = stage.figures
    expected = f.get("expected_loss")
    if expected is None:  # a loss that states no expected value: the measurement alone
        figure = go.Figure(go.Bar(x=["measured"], y=[f["loss"]], text=[sig(f['loss'])],
                                  marker_color=[VERDICT_COLOURS[stage.verdict]],
                                  textposition="outside"))
        figure.update_layout(title=f"Initial loss ({f.get('loss_name', 'loss')} states no "
                                   "expected value)", yaxis_title="loss", height=340)
        return figure
    figure = go.Figure(go.Bar(x=["measured", "expected"], y=[f["loss"], expected],
                              marker_color=[VERDICT_COLOURS[stage.verdict], "#90a4ae"],
                              text=[sig(f['loss']), sig(expected)], textposition="outside"))
    figure.add_hrect(y0=expected / 1.5, y1=expected * 1.5, fillcolor="#2e7d32", opacity=0.08,
                     line_width=0, annotation_text="within 1.5x: passed")
    figure.update_layout(title=f"Initial loss: {stage.verdict}", yaxis_title="loss", height=340)
    return figure


@register_plot("init_layers", "Activations and gradients per layer", "init_check",
               "Activation std should stay near 1 through depth, and gradient norms within "
               "a few orders of magnitude of each other.")
def init_layers(source: PlotSource) -> go.Figure:
    stage = source.stage("init_check")
    if stage is None or not stage.figures.get("activation_std"):
        return note("The init check has not run.")
    stds: dict[str, float] = stage.figures["activation_std"]
    grads: dict[str, float] = stage.figures.get("grad_norm", {})
    figure = make_subplots(rows=1, cols=2, subplot_titles=("activation std (forward)",
                                                           "weight-gradient norm (backward)"))
    figure.add_scatter(x=list(stds), y=list(stds.values()), mode="lines+markers",
                       name="activation std", row=1, col=1)
    figure.add_scatter(x=list(grads), y=list(grads.values()), mode="lines+markers",
                       name="gradient norm", row=1, col=2)
    figure.update_yaxes(type="log", row=1, col=2)
    figure.update_xaxes(title="layer, input to output", tickangle=-30)
    ratio = stage.figures.get("grad_ratio_first_to_last", 1.0)
    figure.update_layout(title=f"Through depth: first-to-last gradient ratio {ratio:.2g}",
                         showlegend=False, height=380)
    return figure


@register_plot("overfit", "Overfitting a tiny subset", "overfit",
               "A working pipeline drives the loss on a few samples below the target line.")
def overfit(source: PlotSource) -> go.Figure:
    stage = source.stage("overfit")
    if stage is None or not stage.figures.get("losses"):
        return note("The overfit probe has not run.")
    losses: list[float] = stage.figures["losses"]
    keep = thin(losses)
    figure = go.Figure(go.Scatter(x=[i + 1 for i in keep], y=[losses[i] for i in keep],
                                  mode="lines", name="training loss"))
    figure.add_hline(y=stage.figures["target_loss"], line_dash="dash", line_color="#2e7d32",
                     annotation_text="target")
    figure.update_layout(title=f"Overfit on {stage.figures.get('samples')} samples: "
                         f"{stage.verdict}", xaxis_title="step", yaxis_title="loss",
                         yaxis_type="log", height=340)
    return figure


@register_plot("lr_probe", "Learning-rate range test", "lr_probe",
               "The loss as the learning rate grows; the suggestion and the range the "
               "search used are marked.")
def lr_probe(source: PlotSource) -> go.Figure:
    stage = source.stage("lr_probe")
    if stage is None or not stage.figures.get("lrs"):
        return note("The learning-rate range test has not run.")
    f: dict[str, Any] = stage.figures
    figure = go.Figure()
    figure.add_scatter(x=f["lrs"], y=f.get("raw_losses", []), mode="lines", name="loss",
                       line={"color": "#b0bec5", "width": 1})
    figure.add_scatter(x=f["lrs"], y=f["losses"], mode="lines", name="smoothed loss",
                       line={"color": "#1565c0"})
    families = f.get("families", {})
    if len(families) > 1:  # one probe per optimizer family: each curve and its range
        return _lr_families(stage, families)
    used = stage.hand_on.get("lr_range") or stage.hand_on.get("lr_ranges")
    if f.get("lr_range"):
        low, high = f["lr_range"]
        figure.add_vrect(x0=low, x1=high, fillcolor="#2e7d32", opacity=0.1, line_width=0)
        _label(figure, math.sqrt(low * high), "search range" if used else
               "suggested range (lr was fixed)", 1.06)
    for key, text, dash, colour, height in (("suggested_lr", "suggested", "dash", "#2e7d32", 0.98),
                                            ("steepest_lr", "steepest", "dot", "#ef6c00", 0.9)):
        if f.get(key):
            figure.add_vline(x=f[key], line_dash=dash, line_color=colour)
            _label(figure, f[key], f"{text} {f[key]:.2g}", height)
    figure.update_layout(title=f"LR range test: {stage.verdict}", xaxis_title="learning rate",
                         yaxis_title="loss", xaxis_type="log", height=380,
                         margin={"t": 80})
    return figure


FAMILY_COLOURS = ("#1565c0", "#6a1b9a", "#00838f", "#ef6c00")


def _lr_families(stage: Any, families: dict[str, Any]) -> go.Figure:
    figure = go.Figure()
    ranges = stage.hand_on.get("lr_ranges", {})
    for (family, f), colour in zip(families.items(), FAMILY_COLOURS, strict=False):
        if not f.get("lrs"):
            continue
        figure.add_scatter(x=f["lrs"], y=f["losses"], mode="lines", line={"color": colour},
                           name=f"{family} ({f['optimizer']}): {f['status']}")
        if family in ranges:
            low, high = ranges[family]
            figure.add_vrect(x0=low, x1=high, fillcolor=colour, opacity=0.08, line_width=0)
        if f.get("suggested_lr"):
            figure.add_vline(x=f["suggested_lr"], line_dash="dash", line_color=colour)
    figure.update_layout(title=f"LR range test per optimizer family: {stage.verdict} (shaded: "
                         "each family's search range; dashed: its suggestion)",
                         xaxis_title="learning rate", yaxis_title="smoothed loss",
                         xaxis_type="log", height=400, margin={"t": 80})
    return figure


def _label(figure: go.Figure, x: float, text: str, height: float) -> None:
    """A label at `x` on a log axis (Plotly places annotations there by log10 of x)."""
    figure.add_annotation(x=math.log10(x), y=height, yref="paper", text=text, showarrow=False,
                          font={"size": 11}, bgcolor="rgba(255,255,255,0.8)")


def _wrap(text: str, width: int = 80) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) > width:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    return "<br>".join([*lines, line])
