"""Probes that check a pipeline before any search: init loss (and the training step's
invariants), overfit, LR range test."""

from __future__ import annotations

from collections.abc import Callable

from stagetune.workers.errors import ConfigError
from stagetune.workers.probes._causes import Finding, worst
from stagetune.workers.probes._common import option
from stagetune.workers.probes._init_check import init_check, judge_gradients, judge_initial_loss
from stagetune.workers.probes._lr_range import (
    SweepOptions,
    centred_average,
    judge_lr_range,
    lr_probe,
    lr_sweep,
    steepest_descent,
    suggest,
    sweep_options,
    valley_rule,
)
from stagetune.workers.probes._overfit import (
    NO_REGULARISATION,
    STOP_RULE,
    fit_subset,
    judge_overfit,
    overfit,
    plateaued,
)
from stagetune.workers.probes._step_findings import check_step
from stagetune.workers.probes._step_invariants import StepUnderTest
from stagetune.workers.probes._step_invariants import cost as step_cost
from stagetune.workers.request import TrialRequest, TrialResult

PROBES: dict[str, Callable[[TrialRequest], TrialResult]] = {
    "init_check": init_check,
    "overfit": overfit,
    "lr_probe": lr_probe,
}


def run_probe(request: TrialRequest) -> TrialResult:
    try:
        probe = PROBES[request.mode]
    except KeyError:
        raise ConfigError(f"unknown probe '{request.mode}'; use {', '.join(PROBES)}") from None
    return probe(request)


# Besides the probes, their parts (options, the fit, the sweep, the judges, the step's
# invariants): workers.trainers runs them on a trainer's own model, loss, batches and step.
__all__ = ["NO_REGULARISATION", "PROBES", "STOP_RULE", "Finding", "StepUnderTest",
           "SweepOptions", "centred_average", "check_step", "fit_subset", "init_check",
           "judge_gradients", "judge_initial_loss", "judge_lr_range", "judge_overfit",
           "lr_probe", "lr_sweep", "option", "overfit", "plateaued", "run_probe",
           "steepest_descent", "step_cost", "suggest", "sweep_options", "valley_rule", "worst"]
