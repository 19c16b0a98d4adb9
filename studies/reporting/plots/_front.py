"""The front of a study with several objectives (`task.objectives`), drawn by Optuna from
refine's trials, with confirm's means over seeds on top."""

from __future__ import annotations

from typing import Any

import optuna
import plotly.graph_objects as go

from stagetune.studies.reporting.plots._registry import note, register_plot
from stagetune.studies.reporting.plots._source import PlotSource
from stagetune.studies.search.pareto import POINT, as_points, declared_objectives, in_memory


def several_objectives(spec: dict[str, Any]) -> bool:
    return bool(spec.get("task", {}).get("objectives"))


@register_plot("pareto_front", "The front of several objectives", "refine",
               "Each refine trial's values of the objectives; red: the front, where no other "
               "trial beats one on every objective. Diamonds: confirm's means over seeds. "
               "Pick a trade-off with GET /api/studies/{id}/front.", only_if=several_objectives)
def pareto_front(source: PlotSource) -> go.Figure:
    refine = source.stage("refine")
    if not several_objectives(source.record.spec):
        return note("This study has one objective: a front needs two or three, named in "
                    "task.objectives.")
    objectives = refine.figures.get("objectives") if refine is not None else \
        declared_objectives(source.record.spec["task"])  # while refine runs: so far
    if objectives is None:
        return note("Refine has not finished: the front comes with it (the direction of an "
                    "objective is known to its trial workers only).")
    if not any(POINT in t.user_attrs for t in source.trials("refine")):
        return note("No refine trial has finished yet: the front comes with the first.")
    names = [name for name, _ in objectives]
    study = in_memory([d for _, d in objectives])
    study.add_trials(as_points(source.trials("refine"), objectives))
    figure = optuna.visualization.plot_pareto_front(study, target_names=names)
    confirm = source.stage("confirm")
    confirmed = confirm.figures.get("front", []) if confirm is not None else []
    if confirmed and len(names) == 2:
        figure.add_scatter(
            x=[e["means"][names[0]] for e in confirmed], y=[e["means"][names[1]] for e in confirmed],
            error_x={"array": [e["std"][names[0]] for e in confirmed]},
            error_y={"array": [e["std"][names[1]] for e in confirmed]},
            mode="markers", marker={"symbol": "diamond", "size": 12, "color": "#1b5e20"},
            name="confirmed: mean over seeds",
            hovertext=[f"config {e['config']}" for e in confirmed])
    figure.update_layout(title="refine: the front of " + " against ".join(names), width=None,
                         height=460)
    return figure
