"""The three probes on real data, including the failures they exist to catch."""

from __future__ import annotations

import math

import pytest

from workers import Task, TrialRequest, execute
from workers.models import MODELS
from workers.probes import steepest_descent, valley_rule

BUILT_IN = ["mlp", "convnet", "resnet", "torchvision"]


def probe(mode: str, model: str = "convnet", params: dict | None = None, **options):  # noqa: ANN201
    return execute(TrialRequest(Task("digits", model), params=params or {}, mode=mode,
                                options=options))


@pytest.mark.parametrize("model", BUILT_IN)
def test_init_check_passes_for_every_built_in_model(model: str) -> None:
    assert model in MODELS
    result = probe("init_check", model)
    assert result.status == "passed", result.message
    assert result.probe["expected_loss"] == pytest.approx(math.log(10), rel=0.01)
    assert result.probe["activation_std"] and result.probe["grad_norm"]


def test_init_check_fails_when_logits_are_scaled_by_20() -> None:
    result = probe("init_check", "logits_x20_convnet")
    assert result.status == "failed"
    assert result.probe["loss_ratio"] > 3
    assert "too high" in result.message and "last layer" in result.message


def test_overfit_drives_the_loss_on_64_samples_near_zero() -> None:
    result = probe("overfit")
    assert result.status == "passed", result.message
    assert result.probe["samples"] == 64
    assert min(result.probe["losses"]) <= result.probe["target_loss"] < 0.05


@pytest.mark.parametrize("model, params", [("convnet", {"lr": 0.0}), ("frozen_convnet", {})])
def test_overfit_fails_for_a_model_that_cannot_learn(model: str, params: dict) -> None:
    result = probe("overfit", model, params, steps=100)
    assert result.status == "failed"
    assert "cannot" in result.message


def test_lr_probe_suggestion_is_within_10x_of_the_best_lr_of_a_grid() -> None:
    result = probe("lr_probe")
    assert result.status == "passed", result.message
    suggested = result.probe["suggested_lr"]
    low, high = result.probe["lr_range"]
    assert low < suggested < high

    grid = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    scores = {}
    for lr in grid:
        run = execute(TrialRequest(Task("digits", "convnet"), params={"lr": lr}, epochs=3))
        scores[lr] = (run.final["best"], -run.history[-1]["val_loss"])
    best = max(grid, key=lambda lr: scores[lr])
    assert suggested / 10 <= best <= suggested * 10, (suggested, best, scores)


def test_suggestion_rules_on_a_known_curve() -> None:
    lrs = [10 ** (-6 + i * 0.1) for i in range(60)]  # 1e-6 .. ~1e0
    # flat, a fall between 1e-4 and 1e-2, then a blow-up
    losses = [2.3 if lr < 1e-4 else 2.3 - 1.0 * (math.log10(lr) + 4) if lr < 1e-2 else
              0.3 + 10 * (math.log10(lr) + 2) for lr in lrs]
    assert 1e-4 <= steepest_descent(lrs, losses) <= 1e-2
    assert 1e-4 <= valley_rule(lrs, losses) <= 1e-2


def test_probe_rejects_unknown_options() -> None:
    from workers.errors import ConfigError

    with pytest.raises(ConfigError, match="allowed: samples, steps"):
        probe("overfit", smaples=10)
