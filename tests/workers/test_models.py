"""Every registered model builds, runs forward and trains an epoch; every knob builds."""

from __future__ import annotations

import math
from typing import Any, get_args

import pytest
import torch

from stagetune.workers import Task, TrialRequest, execute
from stagetune.workers.config import Activation, Init, Norm, Pooling, Skip, parse_params
from stagetune.workers.data import load_dataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.models import MODELS, build_model, register_model

# The models the package ships; tests may register plugins of their own (tests/conftest.py).
BUILTIN = [n for n in MODELS.names() if MODELS.get(n).__module__.startswith("stagetune.workers.")]
# The dataset and options each model is tried with; others get digits and defaults.
MODEL_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet": ("digits", {"width": 8, "depth": 1}),
    "torchvision": ("digits", {"arch": "resnet18"}),
}
EXTRA_CASES = [
    ("mlp", "breast_cancer", {}),
    ("mlp", "diabetes", {}),
    ("convnet", "mnist1d", {}),
    ("resnet", "mnist1d", {"width": 8, "depth": 1}),
]
CASES = [(name, *MODEL_CASES.get(name, ("digits", {}))) for name in BUILTIN] + EXTRA_CASES
KNOBS = [
    (knob, value)
    for knob, kind in (("norm", Norm), ("activation", Activation), ("init", Init),
                       ("skip", Skip), ("pooling", Pooling))
    for value in get_args(kind)
]



def _case_id(case: tuple[str, str, dict[str, Any]]) -> str:
    return f"{case[0]}-{case[1]}"


@pytest.mark.parametrize(("name", "dataset", "options"), CASES, ids=[_case_id(c) for c in CASES])
def test_model_builds_and_gives_one_output_per_class(
    name: str, dataset: str, options: dict[str, Any]
) -> None:
    data = load_dataset(dataset)
    _, cfg = parse_params(options)
    model = build_model(name, data, cfg).eval()
    with torch.no_grad():
        out = model(data.x_val[:5])
    assert out.shape == (5, data.num_outputs)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "dataset", "options"), CASES, ids=[_case_id(c) for c in CASES])
def test_model_trains_an_epoch_through_execute(
    name: str, dataset: str, options: dict[str, Any]
) -> None:
    task = Task(dataset, name, {"subset": 128, "val_subset": 64}, options)
    result = execute(TrialRequest(task, params={"batch_size": 32}, epochs=1))
    assert result.status == "completed", result.message
    assert len(result.history) == 1
    assert math.isfinite(result.history[0]["train_loss"])
    objective = "val_accuracy" if load_dataset(dataset).task == "classification" else "val_rmse"
    assert result.final["objective"] == objective
    assert result.final["best"] == result.history[0][objective]


@pytest.mark.parametrize(("knob", "value"), KNOBS, ids=[f"{k}={v}" for k, v in KNOBS])
def test_convnet_knob_builds_and_every_parameter_learns(knob: str, value: str) -> None:
    data = load_dataset("digits")
    _, cfg = parse_params({knob: value, "width": 16})
    model = build_model("convnet", data, cfg).train()
    out = model(data.x_train[:16])
    assert out.shape == (16, data.num_classes)
    torch.nn.functional.cross_entropy(out, data.y_train[:16]).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} takes no part in the forward pass"
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("init", get_args(Init))
def test_init_keeps_the_highway_gate_biased_towards_carrying(init: str) -> None:
    _, cfg = parse_params({"skip": "highway", "init": init})
    model = build_model("convnet", load_dataset("digits"), cfg)
    biases = [p for name, p in model.named_parameters() if name.endswith(".gate.bias")]
    assert len(biases) == cfg.depth
    for bias in biases:
        assert torch.equal(bias, torch.full_like(bias, -1.0))


@pytest.mark.parametrize("norm", get_args(Norm))
def test_mlp_takes_every_norm_but_instance(norm: str) -> None:
    data = load_dataset("breast_cancer")
    _, cfg = parse_params({"norm": norm, "skip": "residual", "depth": 3})
    if norm == "instance":
        with pytest.raises(ConfigError, match="norm 'instance' needs image or sequence inputs"):
            build_model("mlp", data, cfg)
        return
    out = build_model("mlp", data, cfg).eval()(data.x_val[:4])
    assert out.shape == (4, 2)


def test_convnet_reads_sequences_with_1d_layers() -> None:
    data = load_dataset("mnist1d")
    _, cfg = parse_params({})
    model = build_model("convnet", data, cfg)
    assert data.input_shape == (1, 40)
    assert any(isinstance(m, torch.nn.Conv1d) for m in model.modules())
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


@pytest.mark.parametrize(("task", "params", "fragments"), [
    (Task("digits", "transformer"), {},
     ["unknown model 'transformer'", "registered: ", *BUILTIN]),
    (Task("digits", "convnet"), {"lrr": 0.1}, ["unknown parameter 'lrr'", "known:", " lr,"]),
    (Task("digits", "convnet"), {"lr": -0.1}, ["lr:", "greater than or equal to 0", "(got -0.1)"]),
    (Task("digits", "convnet"), {"depth": 0}, ["depth:", "greater than or equal to 1", "(got 0)"]),
    (Task("digits", "convnet"), {"norm": "weight"}, ["norm:", "'batch'", "'instance'", "'weight'"]),
    (Task("digits", "convnet"), {"batch_size": 4096},
     ["batch_size 4096 is larger than the 1437 training samples of digits"]),
    (Task("digits", "torchvision", model_options={"arch": "resnet19"}), {},
     ["unknown torchvision arch 'resnet19'", "resnet18", "mobilenet_v3_small"]),
    (Task("breast_cancer", "convnet"), {}, ["'convnet' needs image", "(30,)", "use model 'mlp'"]),
    (Task("breast_cancer", "resnet"), {}, ["'resnet' needs image", "use model 'mlp'"]),
    (Task("wine", "torchvision"), {}, ["grey or RGB images", "use model 'mlp' or 'convnet'"]),
], ids=["model", "param-name", "negative-lr", "depth-0", "norm", "batch-size", "arch",
        "convnet-tabular", "resnet-tabular", "torchvision-tabular"])
def test_bad_request_raises_a_config_error_that_says_why(
    task: Task, params: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        execute(TrialRequest(task, params=params, epochs=1))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_register_model_refuses_a_duplicate_name() -> None:
    original = MODELS.get("convnet")
    with pytest.raises(ConfigError, match="model 'convnet' is already registered"):
        register_model("convnet")(original)
    assert MODELS.get("convnet") is original
