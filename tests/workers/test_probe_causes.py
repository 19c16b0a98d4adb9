"""init_check and overfit name the cause of a broken pipeline, with its numbers and a fix,
and stop as soon as the evidence settles it; healthy models get no warning."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from stagetune.workers import Task, TrialRequest, TrialResult, execute
from stagetune.workers.config import ModelConfig
from stagetune.workers.data import Dataset
from stagetune.workers.models import MODELS, register_model
from stagetune.workers.probes import steepest_descent, suggest
from stagetune.workers.probes._lr_range import ignored_first


class _Then(nn.Module):
    """`inner`, then a function of its output (or of its input, with `before`)."""

    def __init__(self, inner: nn.Module, fn: object, before: bool = False) -> None:
        super().__init__()
        self.inner, self.fn, self.before = inner, fn, before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.before:
            return self.inner(self.fn(x))  # type: ignore[operator]
        return self.fn(self.inner(x))  # type: ignore[operator]


def _dead_relu(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """A plain ReLU net whose first layer's bias is -10: its units never turn on."""
    n = math.prod(data.input_shape)
    model = nn.Sequential(nn.Flatten(), nn.Linear(n, 64), nn.ReLU(), nn.Linear(64, 64),
                          nn.ReLU(), nn.Linear(64, data.num_outputs))
    nn.init.constant_(model[1].bias, -10.0)
    return model


def _frozen_mlp(data: Dataset, cfg: ModelConfig) -> nn.Module:
    return MODELS.get("mlp")(data, cfg).requires_grad_(False)


if "causes_softmax_mlp" not in MODELS:  # process-wide registry: register once
    register_model("causes_softmax_mlp")(
        lambda data, cfg: _Then(MODELS.get("mlp")(data, cfg), lambda o: o.softmax(-1)))
    register_model("causes_x100_mlp")(
        lambda data, cfg: _Then(MODELS.get("mlp")(data, cfg), lambda x: 100 * x, before=True))
    register_model("causes_detached_mlp")(
        lambda data, cfg: _Then(MODELS.get("mlp")(data, cfg), lambda o: o.detach()))
    register_model("causes_dead_relu")(_dead_relu)
    register_model("causes_frozen_mlp")(_frozen_mlp)
    # plugins/example_plugin.py's linear_softmax, under a name of its own
    register_model("causes_linear_softmax")(lambda data, cfg: nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(data.input_shape), data.num_outputs)))


def probe(mode: str, model: str, **params: object) -> TrialResult:
    return execute(TrialRequest(Task("digits", model), params=dict(params), mode=mode))


def causes_of(result: TrialResult) -> set[str]:
    return {c["cause"] for c in result.probe.get("causes", [])}


def test_probabilities_into_cross_entropy_are_named_and_stop_overfit_at_once() -> None:
    init = probe("init_check", "causes_softmax_mlp")
    assert init.status == "failed" and causes_of(init) == {"probabilities"}
    assert "outputs probabilities" in init.message and "remove the final softmax" in init.message
    assert f"{math.log(9 + math.e) - 1:.3g}" in init.message  # the floor, ln(C - 1 + e) - 1
    fit = probe("overfit", "causes_softmax_mlp")
    assert fit.status == "failed" and fit.probe["steps"] == 0
    assert fit.probe["stopped_by"] == "probabilities" and "remove the final softmax" in fit.message


def test_dead_units_are_named_per_layer_with_a_fix() -> None:
    init = probe("init_check", "causes_dead_relu")
    assert init.status == "failed" and "dead_units" in causes_of(init)
    assert init.probe["dead_units"]["2"] == 1.0
    assert "Dead units" in init.message and "'2' 100%" in init.message
    assert {"set": {"activation": "leaky_relu"}} in [{"set": f["set"]} for f in init.probe["fixes"]]
    assert not any("residual" in f["set"] for f in init.probe["fixes"])  # not a depth problem
    fit = probe("overfit", "causes_dead_relu")
    assert fit.status == "failed" and "Dead units" in fit.message
    assert fit.probe["stopped_by"] == "plateau" and fit.probe["steps"] < 100


def test_lr_0_is_named_and_stops_overfit_before_any_step() -> None:
    fit = probe("overfit", "mlp", lr=0.0)
    assert fit.status == "failed" and fit.probe["stopped_by"] == "lr_zero"
    assert fit.probe["steps"] == 0 and fit.probe["epochs_equivalent"] == 0.0
    assert "The learning rate is 0" in fit.message
    assert fit.probe["fixes"] == [{"set": {"lr": 0.001}, "why": fit.probe["fixes"][0]["why"]}]
    init = probe("init_check", "mlp", lr=0.0)
    assert init.status == "failed" and causes_of(init) == {"lr_zero"}


@pytest.mark.parametrize("model, words", [("causes_frozen_mlp", "every weight is frozen"),
                                          ("causes_detached_mlp", "graph is detached")])
def test_zero_gradients_are_named(model: str, words: str) -> None:
    init = probe("init_check", model)
    assert init.status == "failed" and causes_of(init) == {"zero_gradients"}, init.message
    assert words in init.message
    fit = probe("overfit", model)
    assert fit.status == "failed" and words in fit.message and fit.probe["steps"] <= 1


def test_unnormalised_inputs_are_named_not_the_last_layer() -> None:
    init = probe("init_check", "causes_x100_mlp", norm="none")
    assert init.status == "failed" and "input_scale" in causes_of(init)
    assert "The inputs are not normalised" in init.message
    assert "last layer" not in init.message
    assert init.probe["activation_std"]["inner.stem.1"] > 10
    assert {"norm": "batch"} in [f["set"] for f in init.probe["fixes"]]
    # with batch norm the loss starts right: a warning that says why, not a failure
    normed = probe("init_check", "causes_x100_mlp")
    assert normed.status == "warned" and "later layers absorb it" in normed.message


@pytest.mark.parametrize("model", ["mlp", "convnet", "resnet", "causes_linear_softmax"])
def test_healthy_digits_models_get_no_warning(model: str) -> None:
    for mode in ("init_check", "overfit"):
        result = probe(mode, model)
        assert result.status == "passed", (mode, result.message)
        assert not result.probe.get("causes") and not result.probe.get("fixes"), result.probe


def test_a_linear_softmax_passes_overfit_with_every_sample_right() -> None:
    result = probe("overfit", "causes_linear_softmax")
    assert result.status == "passed" and result.probe["subset_accuracy"] == 1.0
    assert "every sample classified right" in result.message


def test_the_lr_probe_ignores_the_first_tenth_of_the_sweep() -> None:
    lrs = [1e-7 * 1e8 ** (i / 99) for i in range(100)]
    # a noisy drop in the first steps, then the real descent between 1e-4 and 1e-2
    losses = [2.3 + (0.5 * (3 - i) / 3 if i < 3 else 0.0) for i in range(100)]
    losses = [v - (0.8 * (math.log10(lr) + 4) / 2 if 1e-4 <= lr <= 1e-2 else
                   0.8 if lr > 1e-2 else 0.0) for v, lr in zip(losses, lrs, strict=True)]
    assert ignored_first(lrs) == 10
    assert steepest_descent(lrs[:10], losses[:10]) != lrs[0]  # never the first point
    assert 1e-4 <= steepest_descent(lrs, losses) <= 1e-2
    assert suggest(lrs, losses, "adamw")[1] > 1e-3


def test_fixes_come_back_from_the_api_view_as_data(tmp_path: Path) -> None:
    from stagetune.service.schemas import StudyDetail
    from stagetune.studies.reporting.views import detail
    from stagetune.studies.run.runner import Runner
    from stagetune.studies.spec import load_spec
    from stagetune.studies.store import Store

    spec = load_spec({"name": "causes-fixes", "task": {"dataset": "digits",
                                                       "model": "causes_x100_mlp"},
                      "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
                      "fixed": {"norm": "none"}})
    store = Store(f"sqlite:///{tmp_path / 'fixes.db'}")
    Runner(spec, store).run()
    view = StudyDetail.model_validate(detail(store, store.study("causes-fixes")))
    stage = next(s for s in view.stages if s.name == "init_check")
    assert stage.verdict == "failed" and "not normalised" in stage.message
    assert [f.set for f in stage.fixes] == [{"norm": "batch"}]
    assert "Suggested spec edits: norm: batch" in stage.message
    assert view.status == "stopped"

    # the study page lists them, escaped
    from stagetune.service.web._templates import templates
    from stagetune.service.web.pages import ACTIONS, SECTIONS
    from stagetune.studies.reporting.plots import PLOTS

    shown = detail(store, store.study("causes-fixes"))
    init = next(s for s in shown["stages"] if s["name"] == "init_check")
    init["fixes"].append({"set": {"lr": {"high": 1e-3}}, "why": "<script>x</script>"})
    query = {"stage": None, "state": None, "q": "", "sort": "value", "order": "desc",
             "offset": 0, "limit": 20}
    html = templates().get_template("study.html").render(
        study=shown, stages={s["name"]: s for s in shown["stages"]}, actions=ACTIONS,
        table={"rows": [], "total": 0, "params": [], "error": "", "direction": "maximize",
               "query": query},
        sections={s: [k for k in PLOTS.values() if k.section == s] for s in SECTIONS})
    assert "Suggested spec edits" in html and '<code>norm: batch</code>' in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>x</script>" not in html
