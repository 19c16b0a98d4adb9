"""Two or more studies side by side: how fast each found its best, its winner's learning
curves, and its winner's parameters. Drawn from the store alone, like every figure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from optuna.trial import FrozenTrial
from plotly.subplots import make_subplots

from stagetune.studies.reporting.numbers import readable
from stagetune.studies.reporting.plots._curves import COLOURS, _add_curve, _panels
from stagetune.studies.reporting.plots._registry import note
from stagetune.studies.reporting.plots._sampling import best_first, record_setters
from stagetune.studies.reporting.plots._source import PlotSource

SEARCH_STAGES = ("coarse", "refine")  # confirm re-runs the winners: no new search


def _searched(source: PlotSource) -> list[tuple[int, str, FrozenTrial]]:
    """The search trials with their study-wide numbers (coarse first, as views numbers them)."""
    out, number = [], 0
    for stage in SEARCH_STAGES:
        for trial in source.trials(stage):
            out.append((number, stage, trial))
            number += 1
    return out


def _label(source: PlotSource) -> str:
    return f"{source.name} ({source.objective[0]})"


def best_so_far(sources: Sequence[PlotSource]) -> go.Figure:
    """Each study's best objective after each search trial, as a step line through the
    trials that set a new best (exact, however many trials)."""
    figure = go.Figure()
    for i, source in enumerate(sources):
        searched = _searched(source)
        where = {id(t): n for n, _, t in searched}
        trials = [t for _, _, t in searched]
        setters = record_setters(sorted(trials, key=lambda t: where[id(t)]), source.objective[1])
        if not setters:
            continue
        x = [where[id(t)] for t in setters] + [len(searched) - 1]
        y = [t.value for t in setters] + [setters[-1].value]
        figure.add_scatter(x=x, y=y, mode="lines+markers", line_shape="hv", name=_label(source),
                           line={"color": COLOURS[i % len(COLOURS)]},
                           hovertemplate=f"{source.name}<br>trial %{{x}}: best %{{y:.4g}}"
                           "<extra></extra>")
    if not figure.data:
        return note("None of these studies has a completed search trial yet.")
    figure.update_layout(title="Best so far, by search trial (coarse, then refine)" + _mixed(sources),
                         xaxis_title="search trial", yaxis_title="best objective", height=420)
    return figure


def winner(source: PlotSource) -> tuple[str, FrozenTrial] | None:
    """The best search trial: of the stage that handed on the best, else refine, else coarse."""
    named = (source.handed.get("best") or {}).get("stage")
    for stage in ([named] if named in SEARCH_STAGES else []) + ["refine", "coarse"]:
        ranked = best_first(source.trials(stage), source.objective[1])
        if ranked:
            return stage, ranked[0]
    return None


def winners_curves(sources: Sequence[PlotSource]) -> go.Figure:
    """Each study's winning trial, training (dotted) against validation (solid)."""
    objectives = {s.objective[0] for s in sources}
    score = objectives.pop() if len(objectives) == 1 else "objective"
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", score))
    for i, source in enumerate(sources):
        found = winner(source)
        if found is None:
            continue
        stage, trial = found
        epochs = source.curves(stage, [trial.number]).get(trial.number, [])
        losses, scores = _panels(source.objective[0])
        label = f"{source.name}: {stage} #{trial.number} ({readable(trial.value)})"
        for col, metrics in ((1, losses), (2, scores)):
            for metric in metrics:
                _add_curve(figure, epochs, metric, label, COLOURS[i % len(COLOURS)],
                           legend=col == 1 and metric == metrics[-1], col=col)
    if not figure.data:
        return note("None of these studies has a winner with curves yet.")
    figure.update_xaxes(title="epoch")
    figure.update_layout(title="The winners' learning curves" + _mixed(sources), height=440,
                         legend={"font": {"size": 10}})
    return figure


def _mixed(sources: Sequence[PlotSource]) -> str:
    objectives = sorted({s.objective[0] for s in sources})
    return f" (objectives differ: {', '.join(objectives)})" if len(objectives) > 1 else ""


def winners_parameters(sources: Sequence[PlotSource]) -> dict[str, Any]:
    """The winners side by side: a row per fact and per parameter, a column per study."""
    columns: list[dict[str, Any]] = []
    for source in sources:
        found = winner(source)
        best = source.handed.get("best") or {}
        params = best.get("params") or (found[1].params if found else {})
        value = best.get("value", found[1].value if found else None)
        task = source.record.spec.get("task", {})
        columns.append({"study": source.name, "status": source.record.status,
                        "task": f"{task.get('dataset', '')} · {task.get('model', '')}",
                        "objective": f"{source.objective[0]} ({source.objective[1]})",
                        "best": value if isinstance(value, (int, float)) and math.isfinite(value)
                        else None, "trials": len(_searched(source)),
                        "params": {**source.record.spec.get("fixed", {}), **params}})
    names = sorted({p for c in columns for p in c["params"]})
    return {"columns": columns, "params": names}
