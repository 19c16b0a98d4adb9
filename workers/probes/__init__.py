"""Probes that check a pipeline before any search: init loss, overfit, LR range test."""

from __future__ import annotations

from collections.abc import Callable

from stagetune.workers.errors import ConfigError
from stagetune.workers.probes._init_check import init_check
from stagetune.workers.probes._lr_range import (
    centred_average,
    lr_probe,
    steepest_descent,
    suggest,
    valley_rule,
)
from stagetune.workers.probes._overfit import overfit, plateaued
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


__all__ = ["PROBES", "centred_average", "init_check", "lr_probe", "overfit", "plateaued",
           "run_probe", "steepest_descent", "suggest", "valley_rule"]
