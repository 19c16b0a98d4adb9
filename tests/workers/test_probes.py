"""The three probes on real data, including the failures they exist to catch."""

from __future__ import annotations

import math

import pytest

from stagetune.workers import Task, TrialRequest, execute
from stagetune.workers.data import load_dataset
from stagetune.workers.models import MODELS
from stagetune.workers.probes import (
    centred_average,
    plateaued,
    steepest_descent,
    step_cost,
    suggest,
    valley_rule,
)
from stagetune.workers.probes._init_fixes import affine_cost

BUILT_IN = ["mlp", "convnet", "resnet", "torchvision"]


def probe(mode: str, model: str = "convnet", params: dict | None = None, **options):
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


@pytest.mark.parametrize("model, params", [("convnet", {"lr": 0.0}), ("frozen_convnet", {})])
def test_overfit_stops_early_when_the_loss_does_not_move(model: str, params: dict) -> None:
    result = probe("overfit", model, params, steps=300)
    assert result.status == "failed" and "cannot" in result.message
    assert result.probe["steps"] < 60 and result.probe["stopped_early"]
    # lr 0 and a frozen model are settled before any step, by the optimizer's state
    assert result.probe["stopped_by"] in ("lr_zero", "frozen") and result.probe["stop_rule"]
    assert result.probe["steps"] == 0


@pytest.mark.parametrize("model, params", [
    ("mlp", {}), ("resnet", {}), ("convnet", {"optimizer": "sgd", "lr": 0.05}),
    # a sigmoid net without normalisation sits on a saddle for some 50 steps first
    ("convnet", {"norm": "none", "activation": "sigmoid", "depth": 3}),
])
def test_overfit_plateau_rule_lets_healthy_models_pass(model: str, params: dict) -> None:
    result = probe("overfit", model, params)
    assert result.status == "passed", result.message
    assert result.probe["stopped_by"] == "target"


def test_plateau_rule_compares_the_best_of_a_window() -> None:
    assert plateaued([2.0] * 30)
    assert not plateaued([2.0] * 29)
    noisy = [2.0 - 0.01 * i + (0.5 if i % 2 else 0.0) for i in range(40)]  # spiky but falling
    assert not plateaued(noisy)


def test_probe_costs_are_samples_over_the_training_set() -> None:
    n = len(load_dataset("digits").x_train)
    init = probe("init_check", batches=2)
    # its batches, one batch at a standard init (the reference for the scales through
    # depth), the training step's invariants (two steps and three evaluations) and the
    # check whether the model is affine
    assert init.probe["epochs_equivalent"] == pytest.approx(
        (2 * 64 + 64 + step_cost(2 * 64) + affine_cost()) / n)
    fit = probe("overfit", samples=32, steps=20)
    assert fit.probe["epochs_equivalent"] == pytest.approx(fit.probe["steps"] * 32 / n)
    sweep = probe("lr_probe", iterations=30)
    assert sweep.probe["epochs_equivalent"] == pytest.approx(len(sweep.probe["lrs"]) * 64 / n,
                                                             abs=64 / n)
    assert all(r.parameters > 0 for r in (init, fit, sweep))


def test_max_epochs_caps_the_overfit_probe() -> None:
    n = len(load_dataset("digits").x_train)
    result = probe("overfit", "convnet", {"lr": 1e-4}, max_epochs=0.5)
    assert result.probe["epochs_equivalent"] <= 0.5 + 64 / n
    assert result.probe["stopped_by"] == "max_epochs"
    assert "max_epochs" in result.message


def test_max_epochs_caps_the_lr_probe_but_it_still_sweeps_the_range() -> None:
    n = len(load_dataset("digits").x_train)
    result = probe("lr_probe", max_epochs=1.0)
    assert result.probe["epochs_equivalent"] <= 1.0 + 64 / n
    assert result.probe["iterations"] == n // 64
    lrs = result.probe["lrs"]
    assert lrs[0] == pytest.approx(1e-7)
    assert lrs[1] / lrs[0] == pytest.approx(1e8 ** (1 / (n // 64 - 1)))



def test_an_lr_probe_its_share_cannot_pay_for_is_skipped_and_spends_nothing() -> None:
    n = len(load_dataset("digits").x_train)
    result = probe("lr_probe", max_epochs=9 * 64 / n)  # 9 steps' worth: one short of a sweep
    assert result.status == "skipped" and result.probe["epochs_equivalent"] == 0.0
    assert f"{10 * 64 / n:.3g} epochs" in result.message and "lr range" in result.message
    assert probe("lr_probe", max_epochs=10 * 64 / n).probe["iterations"] == 10


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "rmsprop"])
def test_lr_probe_suggestion_is_within_10x_of_the_best_lr_of_a_grid(optimizer: str) -> None:
    result = probe("lr_probe", params={"optimizer": optimizer})
    assert result.status == "passed", result.message
    suggested = result.probe["suggested_lr"]
    low, high = result.probe["lr_range"]
    assert low < suggested < high

    grid = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]
    scores = {}
    for lr in grid:
        run = execute(TrialRequest(Task("digits", "convnet"),
                                   params={"optimizer": optimizer, "lr": lr}, epochs=3))
        scores[lr] = (run.final.get("best", 0.0), -run.history[-1]["val_loss"]
                      if run.history else -math.inf)
    best = max(grid, key=lambda lr: scores[lr])
    assert suggested / 10 <= best <= suggested * 10, (suggested, best, scores)


@pytest.mark.slow
def test_lr_probe_suggests_sgd_a_larger_lr_than_adamw() -> None:
    sgd = probe("lr_probe", params={"optimizer": "sgd"}).probe
    adamw = probe("lr_probe", params={"optimizer": "adamw"}).probe
    assert sgd["suggested_lr"] > 3 * adamw["suggested_lr"]
    assert sgd["rule"] == "min/3" and adamw["rule"] == "min/10"


def test_suggestion_rules_on_a_known_curve() -> None:
    lrs = [10 ** (-6 + i * 0.1) for i in range(60)]  # 1e-6 .. ~1e0
    # flat, a fall between 1e-4 and 1e-2, then a blow-up
    losses = [2.3 if lr < 1e-4 else 2.3 - 1.0 * (math.log10(lr) + 4) if lr < 1e-2 else
              0.3 + 10 * (math.log10(lr) + 2) for lr in lrs]
    assert 1e-4 <= steepest_descent(lrs, losses) <= 1e-2
    assert 1e-4 <= valley_rule(lrs, losses) <= 1e-2
    # averaging leans a little towards the gentler side of an asymmetric minimum
    smoothed = centred_average(lrs, losses)
    suggested, at_min = suggest(lrs, smoothed, "adamw")
    assert 10**-2.5 <= at_min <= 1e-2 and suggested == pytest.approx(at_min / 10)
    assert suggest(lrs, smoothed, "sgd")[0] == pytest.approx(at_min / 3)


def test_centred_average_does_not_move_a_minimum() -> None:
    lrs = [10 ** (-7 + i * 0.08) for i in range(101)]
    dip = [abs(math.log10(lr) + 3) for lr in lrs]  # a V with its bottom at 1e-3
    smoothed = centred_average(lrs, dip)
    assert lrs[smoothed.index(min(smoothed))] == pytest.approx(1e-3)


def test_probe_rejects_unknown_options() -> None:
    from stagetune.workers.errors import ConfigError

    with pytest.raises(ConfigError, match="allowed: samples, steps"):
        probe("overfit", smaples=10)
    with pytest.raises(ConfigError, match="max_epochs > 0"):
        probe("lr_probe", max_epochs=0)
