"""Grad-CAM of a trained image model on a few validation images, with captum: which
pixels the last convolution looked at for the class the model predicted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from stagetune.workers.data import load_dataset
from stagetune.workers.knobs import parse_task_params
from stagetune.workers.models import build_model
from stagetune.workers.request import Task


@dataclass(frozen=True)
class GradCam:
    images: list[list[list[float]]]  # (N, H, W) greyscale in [0, 1] (channels averaged)
    heatmaps: list[list[list[float]]]  # (N, H, W) in [0, 1], 1 where attention peaks
    labels: list[int]
    predictions: list[int]


def grad_cam(task: Task, params: dict[str, Any], state_dict: dict[str, Any],
             count: int = 8) -> GradCam | None:
    """Grad-CAM for the first `count` validation images; None when the task is not an
    image classification task or the model has no 2-D convolution."""
    if task.model is None:  # a trainer's own model: nothing here can rebuild it
        return None
    knobs = parse_task_params(task, params)
    data = load_dataset(task.needs("dataset"), knobs.dataset_options)
    if not data.is_image or data.task != "classification" or len(data.input_shape) != 3:
        return None
    model = build_model(task.model, data, knobs.model, knobs.declared.get("model"))
    model.load_state_dict(state_dict)
    model.eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return None
    x, labels = data.sample("val", count)  # a stream's first items: only these are read
    x = x.float()
    with torch.no_grad():
        predictions = model(x).argmax(dim=1)
    cam = LayerGradCam(model, convs[-1]).attribute(x, target=predictions)
    heat = LayerAttribution.interpolate(cam, tuple(x.shape[-2:])).relu().squeeze(1)
    return GradCam(images=_unit(x.mean(dim=1)).tolist(), heatmaps=_unit(heat).tolist(),
                   labels=labels.tolist(), predictions=predictions.tolist())


def _unit(batch: torch.Tensor) -> torch.Tensor:
    """Each image scaled to [0, 1] on its own."""
    flat = batch.detach().flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    scale = torch.where(high > low, high - low, torch.ones_like(high))
    return ((flat - low[:, None]) / scale[:, None]).view_as(batch)
