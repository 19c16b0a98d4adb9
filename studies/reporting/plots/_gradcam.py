"""Grad-CAM of the winner on a few validation images (the heavy lifting is captum's,
in `workers.explain`, run in the worker-code child: the API's process imports no torch)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from stagetune.studies.reporting.plots._registry import note, register_plot
from stagetune.studies.reporting.plots._source import PlotSource
from stagetune.studies.spec import stored_spec
from stagetune.studies.store.weights import fetch_weights
from stagetune.workers.request import Task
from stagetune.workers.sidecar import in_child

IMAGES = 8


@register_plot("gradcam", "Grad-CAM of the winner", "confirm",
               "Where the winning model looked for the class it predicted, on validation "
               "images (red: most attention); titles read label → prediction.")
def gradcam(source: PlotSource) -> go.Figure:
    weights = source.handed.get("weights") or {}
    best = source.handed.get("best")
    if not weights.get("artifact_id") or not best:
        return note("Grad-CAM needs the winner's weights: they are kept when confirm finishes.")
    spec = source.record.spec
    task = stored_spec(spec).task.as_task()
    with tempfile.TemporaryDirectory() as tmp:
        path = fetch_weights(weights["artifact_id"], Path(tmp) / "weights.pt")
        found = in_child(_grad_cam, task, {**spec.get("fixed", {}), **best["params"]}, str(path))
    if found is None:
        return note("Grad-CAM applies to image classification models with a convolution.")
    cols = min(len(found["images"]), 4)
    rows = -(-len(found["images"]) // cols)
    titles = [f"{y} → {p}" + ("" if y == p else " ✗") for y, p in
              zip(found["labels"], found["predictions"], strict=True)]
    figure = make_subplots(rows=rows, cols=cols, subplot_titles=titles,
                           horizontal_spacing=0.02, vertical_spacing=0.08)
    for i, (image, heat) in enumerate(zip(found["images"], found["heatmaps"], strict=True)):
        row, col = i // cols + 1, i % cols + 1
        figure.add_heatmap(z=image, colorscale="gray", showscale=False, hoverinfo="skip",
                           row=row, col=col)
        figure.add_heatmap(z=heat, colorscale="Jet", opacity=0.45, zmin=0, zmax=1,
                           showscale=i == 0, hovertemplate="attention %{z:.2f}<extra></extra>",
                           row=row, col=col)
    figure.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
    figure.update_xaxes(showticklabels=False)
    figure.update_layout(title="Grad-CAM of the winner (last convolution)", height=260 * rows)
    return figure


def _grad_cam(task: Task, params: dict[str, Any], weights: str) -> dict[str, Any] | None:
    """In the worker-code child: workers.explain.grad_cam's answer as plain lists."""
    import torch

    from stagetune.workers.explain import grad_cam

    found = grad_cam(task, params, torch.load(weights, map_location="cpu"), IMAGES)
    return None if found is None else dataclasses.asdict(found)
