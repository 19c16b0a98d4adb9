"""The one entry point: run a trial request (train or probe) and return plain data."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from stagetune.workers import probes
from stagetune.workers.baseline import run_baseline
from stagetune.workers.data import load_dataset
from stagetune.workers.data_check import check_data
from stagetune.workers.errors import ConfigError
from stagetune.workers.knobs import parse_task_params
from stagetune.workers.models import build_model, count_parameters
from stagetune.workers.objective import scoring_for
from stagetune.workers.request import MODES, TrialRequest, TrialResult
from stagetune.workers.runtime import pick_device, seed_everything
from stagetune.workers.train import Report, Save, train

log = logging.getLogger(__name__)


def execute(request: TrialRequest, report: Report | None = None,
            save: Save | None = None) -> TrialResult:
    """Run `request`; bad names or values raise ConfigError, a diverging run does not.

    `report` sees each epoch's metrics and may stop the run; `save` gets the checkpoint
    after each epoch of `request.checkpoint_at` that is reached (train mode only).
    """
    started = time.perf_counter()
    if request.mode not in MODES:
        raise ConfigError(f"unknown mode '{request.mode}'; use one of {', '.join(MODES)}")
    if request.epochs < 1:
        raise ConfigError(f"epochs must be at least 1 (got {request.epochs})")
    if request.horizon is not None and request.horizon < request.epochs:
        raise ConfigError(f"horizon {request.horizon} is shorter than epochs {request.epochs}: "
                          "the LR schedule must span at least every epoch trained")
    if request.mode == "data_check":  # the task's dataset, whoever trains on it
        result = check_data(request)
    elif request.task.trainer is not None and request.mode != "baseline":
        result = _trainer(request, report, save)  # the user's own loop, or its parts probed
    elif request.mode == "train":
        result = _train(request, report, save)
    elif request.mode == "baseline":
        result = run_baseline(request)
    else:
        result = probes.run_probe(request)
    result.seconds = time.perf_counter() - started
    return result


def _trainer(request: TrialRequest, report: Report | None, save: Save | None) -> TrialResult:
    from stagetune.workers.trainers import probe_trainer, run_trainer  # plugin code: loaded when named

    if request.mode == "train":
        return run_trainer(request, report, save)
    return probe_trainer(request)


def _train(request: TrialRequest, report: Report | None, save: Save | None) -> TrialResult:
    task = request.task
    if task.dataset is None or task.model is None:
        raise ConfigError("a task without a trainer needs a dataset and a model")
    knobs = parse_task_params(task, request.params)
    train_cfg, model_cfg = knobs.train, knobs.model
    data = load_dataset(task.dataset, knobs.dataset_options)
    generator = seed_everything(request.seed)
    model = build_model(task.model, data, model_cfg, knobs.declared.get("model"))
    device = pick_device(request.device)
    if device.type == "cuda":  # workers are reused across trials: the peak is per trial
        torch.cuda.reset_peak_memory_stats(device)
    scoring = scoring_for(task, data, request.objective, request.direction)
    outcome = train(model, data, train_cfg, model_cfg, request.epochs, device, generator, report,
                    horizon=request.horizon, checkpoint_at=request.checkpoint_at, save=save,
                    resume=request.resume, scoring=scoring, watch=request.vitals)
    metric, direction = scoring.objective, scoring.direction
    final: dict[str, Any] = dict(outcome.history[-1]) if outcome.history else {}
    values = [m[metric] for m in outcome.history]
    if values:
        final["objective"] = metric
        final["best"] = max(values) if direction == "maximize" else min(values)
    if device.type == "cuda":
        final["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    log.info("trial %s on %s/%s: %s %s", request.params, task.dataset, task.model,
             outcome.status, outcome.message)
    result = TrialResult(outcome.status, outcome.history, final, outcome.message, outcome.epoch,
                         parameters=count_parameters(model), start_epoch=outcome.start_epoch,
                         partial=outcome.partial)
    if request.return_weights:
        result.state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return result
