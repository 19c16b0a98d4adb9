"""Each suggested fix points the right way: derived from the measurement that called for it,
and, applied, it moves that measurement toward its target. No judgement is made that a
kind of model cannot pass (a linear model against the linear baseline; an edge that is
the knob's own limit)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import torch
from sklearn.datasets import load_digits
from torch import nn

from stagetune.studies.reporting.diagnosis import diagnose
from stagetune.studies.search.stages._coarse import movable_edges
from stagetune.studies.spec.model import FloatParam, IntParam
from stagetune.studies.spec.space import narrow
from stagetune.workers import Task, TrialRequest, TrialResult, execute
from stagetune.workers.config import ModelConfig
from stagetune.workers.data import DATASETS, Dataset, RawData, load_dataset, register_dataset
from stagetune.workers.losses import loss_fn
from stagetune.workers.models import MODELS, build_model, register_model
from stagetune.workers.probes._init_check import LOSS_OK, gradient_fixes, judge_gradients
from stagetune.workers.probes._overfit import judge_overfit

if "advice_skewed_digits" not in DATASETS:  # process-wide registry: register once
    @register_dataset("advice_skewed_digits")
    def _skewed(*, settings: Any) -> RawData:
        """Zero against every other digit, the zeros kept to 2% (98/2)."""
        x, y = load_digits(return_X_y=True)
        zero, rest = np.flatnonzero(y == 0), np.flatnonzero(y != 0)
        keep = np.sort(np.concatenate([zero[:round(len(rest) * 0.02 / 0.98)], rest]))
        return RawData(x[keep].astype(np.float32), (y[keep] == 0).astype(np.int64),
                       "classification")

if "advice_linear" not in MODELS:
    register_model("advice_linear")(lambda data, cfg: nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(data.input_shape), data.num_outputs)))

PLAIN = {"norm": "none"}  # no normalisation: the outputs start near uniform


def probe(dataset: str, model: str, **params: object) -> TrialResult:
    return execute(TrialRequest(Task(dataset, model), params=dict(params), mode="init_check"))


def gap(value: float, target: float) -> float:
    return abs(math.log(value / target))


def test_a_skewed_prior_gets_the_log_prior_bias_and_it_brings_the_loss_to_its_target() -> None:
    result = probe("advice_skewed_digits", "mlp", **PLAIN)
    expected = result.probe["expected_loss"]
    assert result.probe["loss"] > LOSS_OK * expected  # the case: a loss too high for the prior
    assert "log prior" in result.message and "scale down" not in result.message
    assert result.status == "warned"  # a healthy net at a standard init: not a failed gate
    bias = result.probe["prior_bias"]
    assert bias[0] > bias[1]  # class 0 (the rest, 98%) gets the larger bias
    # apply it to the model, as the sentence says, and measure again
    data = load_dataset("advice_skewed_digits")
    assert isinstance(data, Dataset)
    torch.manual_seed(0)
    model = build_model("mlp", data, ModelConfig(**PLAIN)).train()
    x, y = data.sample("train", 256, torch.Generator().manual_seed(0))
    criterion = loss_fn(data)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        before = float(criterion(model(x), y))
        last.bias.copy_(torch.tensor(bias))
        after = float(criterion(model(x), y))
        last.bias.zero_()
        last.weight.mul_(0.1)  # the advice it used to get: the loss moves no closer
        shrunk = float(criterion(model(x), y))
    assert gap(after, expected) < gap(before, expected) and after <= LOSS_OK * expected
    assert gap(shrunk, expected) >= gap(after, expected)


def test_saturating_layers_get_xavier_or_a_rectifier_and_each_edit_helps() -> None:
    knobs = {"activation": "sigmoid", "depth": 12, **PLAIN}
    result = probe("digits", "mlp", **knobs)
    ratio = result.probe["grad_ratio_first_to_last"]
    assert result.status == "failed" and ratio < 1e-2
    assert "kaiming" not in result.message and "xavier" in result.message
    edits = [f["set"] for f in result.probe["fixes"]]
    assert {"init": "kaiming"} not in edits
    assert {"init": "xavier"} in edits and {"activation": "relu"} in edits
    for edit in edits:  # each knob edit, applied, moves the gradient ratio toward 1
        fixed = probe("digits", "mlp", **{**knobs, **edit}).probe["grad_ratio_first_to_last"]
        assert gap(fixed, 1.0) < gap(ratio, 1.0), (edit, fixed, ratio)


def test_the_init_edit_follows_the_activation() -> None:
    vanishing = 1e-5
    for family, init, other in (("rectifier", "kaiming", "xavier"),
                                ("saturating", "xavier", "kaiming")):
        edits = [f["set"] for f in gradient_fixes(vanishing, ModelConfig(**PLAIN), family)]
        assert {"init": init} in edits and {"init": other} not in edits, family
        assert other not in judge_gradients(vanishing, family)[1]


def _history(train: list[float], objective: list[float]) -> list[dict[str, float]]:
    return [{"epoch": i + 1, "train_loss": t, "val_loss": t + 0.1, "val_accuracy": o}
            for i, (t, o) in enumerate(zip(train, objective, strict=True))]


RISING = [0.30, 0.32, 0.33, 0.35, 0.36, 0.37, 0.38, 0.385]


def test_an_oscillating_training_loss_gets_a_smaller_learning_rate() -> None:
    went_up_and_down = [2.0, 1.9, 2.0, 1.7, 1.85, 1.6, 1.75, 1.6]
    d = diagnose(_history(went_up_and_down, RISING), "val_accuracy", "maximize")
    assert d.kind == "underfitting"
    assert "lower the learning rate" in d.fix and "larger learning rate" not in d.fix
    # the same loss falling slowly and steadily is the case for a larger one
    creeping = [2.0, 1.95, 1.9, 1.85, 1.8, 1.75, 1.7, 1.65]
    d = diagnose(_history(creeping, RISING), "val_accuracy", "maximize")
    assert "larger learning rate" in d.fix and "lower the learning rate" not in d.fix


def test_an_oscillating_overfit_loss_gets_a_smaller_learning_rate_not_a_floor() -> None:
    plateau = [1.2 if i % 2 else 1.0 for i in range(60)]  # up and down around one level
    falling = [5.0 * 0.95 ** i * (1.25 if i % 2 else 1.0) for i in range(60)]  # down, zigzag
    for losses, stopped_by in ((plateau, "plateau"), (falling, "steps")):
        message = judge_overfit(losses, 0.01, 64, 60, stopped_by).message
        assert "lower the learning rate" in message, message
        assert "larger learning rate" not in message and "plateaued" not in message


def test_a_linear_model_is_not_underfitting_for_matching_the_linear_baseline() -> None:
    healthy = [1.0, 0.5, 0.35, 0.3, 0.27, 0.25, 0.24, 0.24]
    matching = [0.90, 0.93, 0.94, 0.945, 0.95, 0.95, 0.95, 0.95]
    baseline = 0.955
    assert diagnose(_history(healthy, matching), "val_accuracy", "maximize", baseline,
                    linear_model=True).kind != "underfitting"
    # a network with the same curves is asked to beat it, and does not
    assert diagnose(_history(healthy, matching), "val_accuracy", "maximize",
                    baseline).kind == "underfitting"
    # a linear model well short of the baseline is still underfitting
    short = [v - 0.15 for v in matching]
    d = diagnose(_history(healthy, short), "val_accuracy", "maximize", baseline,
                 linear_model=True)
    assert d.kind == "underfitting" and "falls short of the linear baseline" in d.message


def test_init_check_measures_whether_the_model_is_affine() -> None:
    assert probe("digits", "advice_linear").probe["affine"] is True
    assert probe("digits", "mlp").probe["affine"] is False


def _trials(name: str, values: list[float], distribution: Any) -> list[optuna.trial.FrozenTrial]:
    return [optuna.trial.create_trial(params={name: v}, distributions={name: distribution},
                                      value=0.9) for v in values]


def test_no_edge_warning_where_the_edge_is_the_knobs_own_limit() -> None:
    at_zero = _trials("dropout", [0.0, 0.005, 0.01],
                      optuna.distributions.FloatDistribution(0.0, 0.5))
    limit = {"dropout": FloatParam(type="float", low=0.0, high=0.5)}
    assert narrow(limit, at_zero).boundary == {"dropout": "low"}  # good values crowd it
    assert movable_edges(limit, narrow(limit, at_zero)).boundary == {}
    # the user's own bound, above the limit: there the range is the problem
    declared = {"dropout": FloatParam(type="float", low=0.1, high=0.5)}
    at_low = _trials("dropout", [0.1, 0.105, 0.11],
                     optuna.distributions.FloatDistribution(0.1, 0.5))
    assert movable_edges(declared, narrow(declared, at_low)).boundary == {"dropout": "low"}
    depth = {"depth": IntParam(type="int", low=1, high=8)}  # depth >= 1
    at_one = _trials("depth", [1, 1, 1], optuna.distributions.IntDistribution(1, 8))
    assert movable_edges(depth, narrow(depth, at_one)).boundary == {}
