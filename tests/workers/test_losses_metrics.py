"""Losses, metrics and objectives on real data: digits, a multi-label set derived from it
(is the digit even, at least 5, prime), and diabetes for regression."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from sklearn import datasets as sk
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression, Ridge
from torch.nn import functional as F
from torchmetrics.classification import MulticlassCohenKappa

from stagetune.workers import ConfigError, Task, TrialRequest, execute
from stagetune.workers.data import RawData, dataset_loaded, load_dataset, register_dataset
from stagetune.workers.losses import LOSSES, bce_with_logits, loss_fn
from stagetune.workers.metrics import METRICS, Scorer, register_metric
from stagetune.workers.objective import (
    direction_of,
    initial_loss,
    objective_for,
    scoring_for,
    task_kinds,
    task_metrics,
)

PRIMES = (2, 3, 5, 7)


def _digit_labels(y: np.ndarray) -> np.ndarray:
    return np.stack([y % 2 == 0, y >= 5, np.isin(y, PRIMES)], axis=1).astype(np.float32)


@register_dataset("digit_facts", loss="bce_with_logits", metrics=("macro_f1",))
def digit_facts(*, settings: Any) -> RawData:
    """Digits with three yes/no labels: even, at least 5, prime."""
    bunch = sk.load_digits()
    return RawData(bunch.images[:, None].astype(np.float32), _digit_labels(bunch.target),
                   "multilabel", is_image=True)


def focal(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Focal loss (gamma 2): cross-entropy that discounts the samples already right."""
    logp = F.log_softmax(out, -1).gather(1, y[:, None]).squeeze(1)
    return (-(1 - logp.exp()) ** 2 * logp).mean()


@register_metric("kappa", direction="maximize", kinds=("classification",))
def kappa(data: Any) -> MulticlassCohenKappa:
    """Cohen's kappa: agreement beyond chance."""
    return MulticlassCohenKappa(num_classes=data.num_classes)


def _digits(**_: Any) -> RawData:
    bunch = sk.load_digits()
    return RawData(bunch.images[:, None].astype(np.float32), bunch.target, "classification",
                   is_image=True)


register_dataset("focal_digits", loss=focal, metrics=("kappa", "top5_accuracy"))(_digits)
register_dataset("stated_digits", loss=focal, expected_loss=lambda data: 1.2)(_digits)


def train(task: Task, epochs: int = 1, **kw: Any):
    return execute(TrialRequest(task, epochs=epochs, **kw))


# Expected initial losses against an untrained model.

LOSS_TASKS = {
    "cross_entropy": Task("digits", "mlp"),
    "bce_with_logits": Task("digit_facts", "mlp"),
    "mse": Task("diabetes", "mlp"),
    "huber": Task("diabetes", "mlp", loss="huber"),
}


def _by_hand(loss: str, task: Task) -> float:
    data = load_dataset(task.dataset)
    y = data.y_train.double()
    if loss == "cross_entropy":
        p = torch.bincount(data.y_train).double() / len(y)
        return float(-(p * p.log()).sum())
    if loss == "bce_with_logits":
        p = y.mean(0)
        return float((-(p * p.log() + (1 - p) * (1 - p).log())).mean())
    if loss == "mse":
        return float(((y - y.mean()) ** 2).mean())
    d = (y - y.mean()).abs()
    return float(torch.where(d < 1, 0.5 * d**2, d - 0.5).mean())


@pytest.mark.parametrize("loss", sorted(LOSS_TASKS))
def test_each_built_in_loss_expects_what_an_untrained_model_gets(loss: str) -> None:
    assert loss in LOSSES
    task = LOSS_TASKS[loss]
    result = execute(TrialRequest(task, mode="init_check"))
    assert result.status == "passed", result.message
    probe = result.probe
    assert probe["loss_name"] == loss and result.message.startswith(f"Initial {loss} loss")
    assert probe["expected_loss"] == pytest.approx(_by_hand(loss, task), rel=1e-4)
    assert 1 / 1.5 <= probe["loss_ratio"] <= 1.5  # the init check's own pass band


def test_expected_losses_have_their_textbook_values() -> None:
    assert LOSS_TASKS  # ln C for balanced classes, ln 2 for a 50% label, 1 for standardised y
    assert initial_loss(load_dataset("digits"))[0] == pytest.approx(math.log(10), rel=0.01)
    facts = load_dataset("digit_facts")
    assert facts.label_prior[0] == pytest.approx(0.5, abs=0.02)
    assert initial_loss(facts)[0] == pytest.approx(math.log(2), rel=0.02)
    assert initial_loss(load_dataset("diabetes"))[0] == pytest.approx(1.0, abs=0.01)


def test_the_init_check_names_its_loss_in_the_sentence() -> None:
    result = execute(TrialRequest(Task("digit_facts", "mlp"), mode="init_check"))
    assert "binary cross-entropy of each label's prior" in result.message
    result = execute(TrialRequest(Task("diabetes", "mlp", loss="huber"), mode="init_check"))
    assert "Huber loss of predicting the mean" in result.message


# Metrics: each one reported, and equal to scikit-learn's on the same outputs.

def _outputs(dataset: str) -> tuple[Any, torch.Tensor, np.ndarray]:
    """Real outputs: a linear model's validation logits (standardised targets for
    regression), and the labels they score against."""
    data = load_dataset(dataset)
    x, x_val = data.x_train.flatten(1).numpy(), data.x_val.flatten(1).numpy()
    y, y_val = data.y_train.numpy(), data.y_val.numpy()
    if data.task == "regression":
        return data, torch.as_tensor(Ridge().fit(x, y).predict(x_val))[:, None].float(), y_val
    if data.task == "multilabel":
        cols = [LogisticRegression(max_iter=300).fit(x, y[:, j]).decision_function(x_val)
                for j in range(y.shape[1])]
        return data, torch.as_tensor(np.stack(cols, 1)).float(), y_val
    model = LogisticRegression(C=0.01, max_iter=300).fit(x, y)
    return data, torch.as_tensor(model.decision_function(x_val)).float(), y_val


def _sklearn(name: str, data: Any, out: torch.Tensor, y: np.ndarray) -> float:
    if data.task == "regression":
        pred = out.squeeze(1).numpy() * data.target_std + data.target_mean
        true = y * data.target_std + data.target_mean
        return {"rmse": math.sqrt(skm.mean_squared_error(true, pred)),
                "mae": skm.mean_absolute_error(true, pred), "r2": skm.r2_score(true, pred)}[name]
    if data.task == "multilabel":
        proba, hard = out.sigmoid().numpy(), (out > 0).numpy()
        return {"accuracy": float((hard == y).mean()),
                "macro_f1": skm.f1_score(y, hard, average="macro"),
                "auroc": skm.roc_auc_score(y, proba, average="macro")}[name]
    proba = out.softmax(1).numpy()
    return {"accuracy": skm.accuracy_score(y, proba.argmax(1)),
            "top5_accuracy": skm.top_k_accuracy_score(y, proba, k=5),
            "macro_f1": skm.f1_score(y, proba.argmax(1), average="macro"),
            "auroc": skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")}[name]


METRIC_CASES = [("digits", m) for m in ("accuracy", "top5_accuracy", "macro_f1", "auroc")] + [
    ("digit_facts", m) for m in ("accuracy", "macro_f1", "auroc")] + [
    ("diabetes", m) for m in ("rmse", "mae", "r2")]


def test_every_built_in_metric_has_a_case() -> None:
    built_in = {"accuracy", "top5_accuracy", "macro_f1", "auroc", "rmse", "mae", "r2"}
    assert built_in <= set(METRICS) and built_in == {m for _, m in METRIC_CASES}


@pytest.mark.parametrize(("dataset", "name"), METRIC_CASES)
def test_each_metric_matches_scikit_learn_in_label_units(dataset: str, name: str) -> None:
    data, out, y = _outputs(dataset)
    scorer = Scorer(data, loss_fn(data), [name])
    for i in range(0, len(y), 100):  # in batches, as evaluate feeds it
        scorer.update(out[i:i + 100], torch.as_tensor(y[i:i + 100]))
    scores = scorer.compute()
    assert scores[f"val_{name}"] == pytest.approx(_sklearn(name, data, out, y), abs=1e-4)
    assert scores["val_loss"] == pytest.approx(float(loss_fn(data)(out, torch.as_tensor(y))),
                                               rel=1e-5)


@pytest.mark.parametrize(("dataset", "name"), METRIC_CASES)
def test_each_metric_is_reported_by_a_run(dataset: str, name: str) -> None:
    result = train(Task(dataset, "mlp", metrics=(name,)), epochs=1)
    value = result.history[0][f"val_{name}"]
    assert math.isfinite(value)
    if METRICS.entry(name).info["direction"] == "maximize" and name != "r2":
        assert 0 <= value <= 1


def test_top5_is_capped_at_the_number_of_classes() -> None:
    result = train(Task("digits", "mlp", dataset_options={"classes": [3, 8]},
                        metrics=("top5_accuracy",)))
    assert result.history[0]["val_top5_accuracy"] == 1.0  # both classes are in the top 2


# Multi-label end to end.

def test_a_multilabel_dataset_trains_and_is_judged_by_its_macro_f1() -> None:
    data = load_dataset("digit_facts")
    assert data.task == "multilabel" and data.num_outputs == 3
    assert data.y_train.shape == (len(data.x_train), 3) and data.y_train.dtype == torch.float32
    result = train(Task("digit_facts", "convnet"), epochs=4)
    assert result.status == "completed", result.message
    assert result.final["objective"] == "val_macro_f1"
    assert result.final["best"] == max(m["val_macro_f1"] for m in result.history)
    assert result.final["best"] > 0.8
    assert {"train_loss", "val_loss", "val_accuracy", "val_macro_f1"} <= set(result.history[-1])


def test_the_multilabel_baseline_reports_the_objective_and_its_chance() -> None:
    result = execute(TrialRequest(Task("digit_facts", "mlp"), mode="baseline"))
    final = result.final
    assert final["objective"] == "val_macro_f1" and final["model"].startswith("one_vs_rest")
    assert 0.6 < final["val_macro_f1"] < 1 and final["best"] == final["val_macro_f1"]
    assert final["chance"] < final["val_macro_f1"] - 0.2
    assert "reaches val_macro_f1" in result.message
    # Asked for another reported metric, the baseline scores that one.
    auroc = execute(TrialRequest(Task("digit_facts", "mlp", metrics=("auroc",)),
                                 mode="baseline", objective="val_auroc")).final
    assert auroc["objective"] == "val_auroc" and auroc["chance"] == pytest.approx(0.5)


def test_a_multilabel_split_is_checked() -> None:
    with pytest.raises(ConfigError, match="'classes' applies to classification.*multilabel"):
        load_dataset("digit_facts", {"classes": [0, 1]})
    from stagetune.workers.data._split import make_dataset

    bad = RawData(np.zeros((20, 4), np.float32), np.full((20, 2), 0.5), "multilabel")
    with pytest.raises(ConfigError, match="must be 0 or 1"):
        make_dataset("halves", bad)
    with pytest.raises(ConfigError, match="shape"):
        make_dataset("flat", RawData(np.zeros((20, 4), np.float32), np.zeros(20), "multilabel"))


def test_bce_label_smoothing_pulls_targets_to_one_half() -> None:
    y = torch.tensor([[1.0, 0.0]])
    sure = torch.tensor([[20.0, -20.0]])
    assert float(bce_with_logits(sure, y)) < 1e-6
    assert float(bce_with_logits(sure, y, label_smoothing=0.2)) > 1  # 10% wrong, confidently


# A plugin's loss and metric.

def test_a_plugin_loss_and_metric_train_and_judge_the_run() -> None:
    assert "focal_digits" in LOSSES  # the callable, registered under the dataset's name
    result = train(Task("focal_digits", "mlp"), epochs=2)
    assert result.status == "completed", result.message
    assert result.final["objective"] == "val_kappa"
    assert {"val_kappa", "val_top5_accuracy", "val_accuracy"} <= set(result.history[-1])
    assert result.final["best"] > 0.5


def test_a_loss_without_an_expected_value_is_not_judged_but_said_so() -> None:
    result = execute(TrialRequest(Task("focal_digits", "mlp"), mode="init_check"))
    assert result.status == "passed" and result.probe["expected_loss"] is None
    assert "not judged" in result.message and "expected=fn(data)" in result.message
    # The loss measured is the focal one: (1 - 1/10)^2 ln 10 at a near-uniform output.
    assert result.probe["loss"] == pytest.approx(0.81 * math.log(10), rel=0.15)
    stated = execute(TrialRequest(Task("stated_digits", "mlp"), mode="init_check"))
    assert stated.probe["expected_loss"] == 1.2
    assert "the dataset's own expected stated_digits" in stated.message


# Objectives: names and directions without the data, and the request's objective.

def test_task_metrics_and_objective_come_without_loading_data() -> None:
    task = Task("digit_facts", "mlp", dataset_options={"split_seed": 7}, metrics=("auroc",))
    assert task_kinds(task) == ("multilabel",)
    assert task_metrics(task) == ("train_loss", "val_loss", "val_accuracy", "val_macro_f1",
                                  "val_auroc")
    assert objective_for(task) == ("val_macro_f1", "maximize")
    assert not dataset_loaded("digit_facts", {"split_seed": 7})
    huber = Task("diabetes", "mlp", loss="huber", metrics=("mae",))
    assert task_metrics(huber) == ("train_loss", "val_loss", "val_rmse", "val_mae")
    # Digits declares nothing: its kind is the data's; the list covers every kind.
    assert {"val_accuracy", "val_rmse"} <= set(task_metrics(Task("digits", "mlp")))
    assert objective_for(Task("digits", "mlp")) == ("val_accuracy", "maximize")
    assert objective_for(Task("diabetes", "mlp")) == ("val_rmse", "minimize")


def test_directions_follow_the_metric() -> None:
    task = Task("digits", "mlp")
    assert [direction_of(task, m) for m in ("val_loss", "train_loss", "val_accuracy",
                                            "val_rmse", "val_r2", "val_kappa")] == [
        "minimize", "minimize", "maximize", "minimize", "maximize", "maximize"]
    with pytest.raises(ConfigError, match="no direction is known for metric 'val_bleu'"):
        direction_of(task, "val_bleu")


def test_the_request_objective_decides_best_and_early_stopping() -> None:
    result = train(Task("digits", "mlp"), epochs=3, objective="val_loss")
    assert result.final["objective"] == "val_loss"
    assert result.final["best"] == min(m["val_loss"] for m in result.history)


@pytest.mark.parametrize(("task", "match"), [
    (Task("digits", "mlp", loss="mse"), "loss 'mse' applies to regression"),
    (Task("digits", "mlp", metrics=("rmse",)), "metric 'rmse' applies to regression"),
    (Task("digits", "mlp", loss="nope"), "unknown loss 'nope'; registered: .*cross_entropy"),
])
def test_a_loss_or_metric_that_does_not_fit_is_refused(task: Task, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        train(task)


def test_contradictions_and_unreported_objectives_are_refused() -> None:
    with pytest.raises(ConfigError, match="fit no task kind"):
        task_kinds(Task("digits", "mlp", loss="mse", metrics=("accuracy",)))
    with pytest.raises(ConfigError, match="objective 'val_auroc' is not a metric this run "
                                          "reports; it reports train_loss"):
        scoring_for(Task("digits", "mlp"), load_dataset("digits"), "val_auroc")
    with pytest.raises(ConfigError, match="direction must be one of maximize, minimize"):
        register_metric("sideways", direction="up")
    with pytest.raises(ConfigError, match="loss must be a registered loss's name or a function"):
        register_dataset("bad_loss", loss=42)  # type: ignore[arg-type]
