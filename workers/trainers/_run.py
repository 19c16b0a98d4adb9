"""Run a trial on a registered trainer in place of the built-in loop: build its context,
call it, and turn what it reported (or why it failed) into a TrialResult."""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import replace
from typing import Any

import torch

from stagetune.workers.errors import ConfigError, StagetuneError
from stagetune.workers.knobs import parse_task_params
from stagetune.workers.request import TrialRequest, TrialResult
from stagetune.workers.runtime import pick_device, seed_everything
from stagetune.workers.trainers._checkpoint import unpack
from stagetune.workers.trainers._context import Report, Save, TrainerContext, TrainerStop
from stagetune.workers.trainers._errors import TrainerError
from stagetune.workers.trainers._registry import TRAINERS

log = logging.getLogger(__name__)


def make_context(request: TrialRequest, report: Report | None = None,
                 save: Save | None = None, overrides: dict[str, Any] | None = None
                 ) -> TrainerContext:
    """The context for `request`'s trainer; `overrides` set knobs on top (a probe's)."""
    task = request.task
    assert task.trainer is not None  # only trainer tasks come here
    params = {**task.model_options, **request.params, **(overrides or {})}
    knobs = parse_task_params(replace(task, model_options={}), params)
    data = None
    if task.dataset is not None:
        from stagetune.workers.data import load_dataset

        data = load_dataset(task.dataset, knobs.dataset_options)
    metric, direction = objective_of_request(request)
    seed_everything(request.seed)
    return TrainerContext(
        trainer=task.trainer, params=params, knobs=knobs.declared.get("trainer"),
        train=knobs.train, arch=knobs.model, epochs=request.epochs,
        horizon=request.horizon or request.epochs, seed=request.seed,
        device=pick_device(request.device), mode=request.mode, data=data,
        objective=metric, direction=direction, checkpoint_at=tuple(request.checkpoint_at),
        resume=request.resume, report=report, save=save)


def objective_of_request(request: TrialRequest) -> tuple[str | None, str | None]:
    """The metric every report must hold and its direction: the request's, else the
    trainer's declared one; (None, None) when neither names one (nothing to check)."""
    from stagetune.workers.objective import objective_for

    task = request.task
    if request.objective is None and not TRAINERS.entry(str(task.trainer)).info.get("objective"):
        return None, None
    if request.direction is not None:
        return request.objective or objective_for(task)[0], request.direction
    try:
        return objective_for(task, request.objective)
    except ConfigError:  # a metric of the trainer's own, no direction given: best is unknown
        return request.objective, None


def run_trainer(request: TrialRequest, report: Report | None = None,
                save: Save | None = None) -> TrialResult:
    """Train `request` with its task's trainer; a trainer that fails raises TrainerError."""
    name = request.task.trainer
    assert name is not None
    entry = TRAINERS.entry(name)
    ctx = make_context(request, report, save)
    if ctx.device.type == "cuda":  # workers are reused across trials: the peak is per trial
        torch.cuda.reset_peak_memory_stats(ctx.device)
    stop: TrainerStop | None = None
    try:
        entry.factory(ctx)
    except TrainerStop as exc:
        stop = exc
    except StagetuneError:
        raise  # stagetune's own (a bad knob, a command's exit): its message says it all
    except Exception as exc:
        log.warning("trainer %s raised", name, exc_info=True)
        raise TrainerError(f"trainer '{name}' raised {_described(exc)}") from None
    if stop is not None and stop.failed:
        raise TrainerError(f"trainer '{name}' failed: {stop.message}")
    if not ctx.history and ctx.start_epoch < ctx.epochs:
        raise TrainerError(f"trainer '{name}' returned without reporting an epoch; call "
                           "ctx.report(epoch, metrics) after each epoch")
    return _result(request, ctx)


def _result(request: TrialRequest, ctx: TrainerContext) -> TrialResult:
    history = ctx.history
    final: dict[str, Any] = dict(history[-1]) if history else {}
    metric = ctx.objective
    values = [m[metric] for m in history if metric is not None and metric in m]
    if values and metric is not None:
        final["objective"] = metric
        if ctx.direction is not None:
            final["best"] = max(values) if ctx.direction == "maximize" else min(values)
    if ctx.device.type == "cuda":
        final["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(ctx.device) / 2**20
    status = "stopped" if ctx.stopped_at is not None else "completed"
    messages = [f"stopped by the caller after epoch {ctx.stopped_at}"] \
        if ctx.stopped_at is not None else []
    result = TrialResult(status, history, final, "; ".join(messages + ctx.notes),
                         ctx.stopped_at, start_epoch=ctx.start_epoch)
    if request.return_weights and ctx.latest is not None:
        _, obj = unpack(ctx.trainer, ctx.latest)  # the last checkpoint stands for the weights
        if isinstance(obj, dict):
            result.state_dict = obj
    log.info("trial %s on trainer %s: %s %s", request.params, ctx.trainer, status,
             result.message)
    return result


def _described(exc: BaseException) -> str:
    """'ValueError: boom (at train.py:12)': the type, the message's first line and where,
    by file name only (messages never show server paths)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = type(exc).__name__ + (f": {lines[0][:300]}" if lines else "")
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {os.path.basename(last.filename)}:{last.lineno})"
    return text
