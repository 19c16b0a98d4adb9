"""Declared knobs: a plugin's model and dataset tune values of their own, which the spec
checks with field-named errors and the factories receive."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, Field
from sklearn.datasets import load_digits
from torch import nn

from stagetune.studies.errors import SpecError
from stagetune.studies.spec import load_spec
from stagetune.workers import Task, TrialRequest, execute
from stagetune.workers.config import ModelConfig
from stagetune.workers.data import Dataset, RawData, register_dataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.models import register_model

built: list[dict[str, Any]] = []  # what the factories were handed, test by test


class Wide(BaseModel):
    num_heads: int = Field(2, ge=1, le=8, description="parallel linear heads")
    head_scale: float = Field(1.0, gt=0, le=10)


class Crop(BaseModel):
    keep_classes: int = Field(10, ge=2, le=10)


@register_model("knob_heads", knobs=Wide)
def knob_heads(data: Dataset, cfg: ModelConfig, knobs: Wide) -> nn.Module:
    """Linear heads averaged: a model whose size follows its own knob."""
    built.append({"num_heads": knobs.num_heads, "head_scale": knobs.head_scale,
                  "width": cfg.width})
    return _Heads(math.prod(data.input_shape), data.num_outputs, knobs.num_heads)


class _Heads(nn.Module):
    def __init__(self, inputs: int, outputs: int, heads: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(inputs, outputs) for _ in range(heads))

    def forward(self, x: Any) -> Any:
        x = x.flatten(1)
        return sum(h(x) for h in self.heads) / len(self.heads)


@register_dataset("knob_digits", knobs=Crop)
def knob_digits(*, settings: Any, keep_classes: int = 10) -> RawData:
    """digits, its first `keep_classes` classes."""
    x, y = load_digits(return_X_y=True)
    keep = y < keep_classes
    return RawData(x[keep].reshape(-1, 1, 8, 8).astype(np.float32), y[keep], "classification",
                   is_image=True)


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "knobs", "task": {"dataset": "knob_digits",
                                                       "model": "knob_heads"}}
    return {**base, **overrides}


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        load_spec(data)
    return dict(caught.value.problems)


def test_declared_knobs_validate_in_space_fixed_and_options() -> None:
    # accepted (no SpecError) and kept as written: a range up to the knob's own bound
    searched = load_spec(spec(space={"num_heads": {"type": "int", "low": 1, "high": 8},
                                     "keep_classes": {"type": "categorical",
                                                      "choices": [5, 10]}},
                              fixed={"head_scale": 2.0})).model_dump(mode="json")
    assert {k: (v["type"], v.get("low"), v.get("high"), v.get("choices"))
            for k, v in searched["space"].items()} == {
        "num_heads": ("int", 1, 8, None), "keep_classes": ("categorical", None, None, [5, 10])}
    assert searched["fixed"] == {"head_scale": 2.0}
    fixed = load_spec(spec(task={"dataset": "knob_digits", "model": "knob_heads",
                                 "model_options": {"num_heads": 4},
                                 "dataset_options": {"keep_classes": 3}}))
    assert fixed.task.model_options == {"num_heads": 4}
    assert fixed.task.dataset_options == {"keep_classes": 3}


def test_an_undeclared_knob_lists_the_declared_ones() -> None:
    found = problems(spec(space={"num_head": {"type": "int", "low": 1, "high": 4}}))
    assert "unknown parameter 'num_head'" in found["space"]
    assert "num_heads" in found["space"] and "head_scale" in found["space"]
    assert "keep_classes" in found["space"]  # the dataset's knobs count too
    # another model does not know them
    other = problems({"name": "x", "task": {"dataset": "digits", "model": "mlp"},
                      "space": {"num_heads": {"type": "int", "low": 1, "high": 4}}})
    assert "unknown parameter 'num_heads'" in other["space"]


def test_a_declared_knob_out_of_bounds_names_the_end() -> None:
    found = problems(spec(space={"num_heads": {"type": "int", "low": 1, "high": 9}}))
    assert list(found) == ["space.num_heads.high"]
    assert "num_heads" in found["space.num_heads.high"] and "8" in found["space.num_heads.high"]
    found = problems(spec(task={"dataset": "knob_digits", "model": "knob_heads",
                                "dataset_options": {"keep_classes": 1}}))
    assert "keep_classes" in found["task.dataset_options"]
    found = problems(spec(space={"keep_classes": {"type": "int", "low": 1, "high": 10}}))
    assert "keep_classes" in found["space.keep_classes.low"]
    # a float range on an int knob fails in between: refused at submit
    found = problems(spec(space={"num_heads": {"type": "float", "low": 1, "high": 4}}))
    assert "takes no fractions" in found["space.num_heads"]


def test_factories_receive_the_values() -> None:
    built.clear()
    task = Task("knob_digits", "knob_heads", model_options={"num_heads": 3})
    result = execute(TrialRequest(task, params={"head_scale": 0.5, "keep_classes": 4,
                                                "width": 7}, epochs=1))
    assert result.status == "completed", result.message
    assert built == [{"num_heads": 3, "head_scale": 0.5, "width": 7}]
    assert result.parameters == 3 * (64 * 4 + 4)  # three heads over the 4 classes kept
    with pytest.raises(ConfigError, match="num_heads"):
        execute(TrialRequest(task, params={"num_heads": 0}, epochs=1))


def test_a_knob_may_not_shadow_a_built_in_one() -> None:
    class Bad(BaseModel):
        depth: int = 3

    with pytest.raises(ConfigError, match="built-in"):
        register_model("shadowing", knobs=Bad)


def test_the_registry_lists_declared_knobs_with_type_default_and_bounds() -> None:
    # the catalog the registry endpoint serves, built here: the endpoint builds it in the
    # worker-code child (workers.sidecar), which loads plugins but not this module's entries
    from stagetune.service.schemas import Registry
    from stagetune.workers.catalog import catalog

    listed = Registry.model_validate({**catalog(), "stages": [], "samplers": {}, "pruners": []}
                                     ).model_dump()
    knobs = {k["name"]: k for k in listed["models"]["knob_heads"]["knobs"]}
    assert knobs["num_heads"]["type"] == "int" and knobs["num_heads"]["default"] == 2
    assert knobs["num_heads"]["bounds"] == {"ge": 1, "le": 8}
    assert knobs["num_heads"]["description"] == "parallel linear heads"
    assert knobs["head_scale"]["bounds"] == {"gt": 0, "le": 10}
    assert listed["models"]["knob_heads"]["description"].startswith("Linear heads averaged")
    data = {k["name"]: k for k in listed["datasets"]["knob_digits"]["knobs"]}
    assert list(data) == ["keep_classes"]  # the split options every dataset takes are not its own
    assert listed["models"]["mlp"]["knobs"] == []  # built-in models take the built-in knobs
    assert "lr" in listed["parameters"]


@pytest.mark.slow
def test_timm_builds_untrained_and_loads_a_local_weights_file(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import timm
    import torch

    from stagetune.workers.data import get_data_settings

    task = Task("digits", "timm", model_options={"arch": "mobilenetv3_small_050"})
    result = execute(TrialRequest(task, params={"batch_size": 128}, epochs=1))
    assert result.status == "completed", result.message
    assert "val_accuracy" in result.history[0]
    found = problems({"name": "t", "task": {"dataset": "digits", "model": "timm",
                                            "model_options": {"arch": "resnet_nonesuch"}}})
    assert "unknown timm arch 'resnet_nonesuch'" in found["task.model_options.arch"]
    # a timm network's own state_dict (no wrapper prefix), from the data folder
    monkeypatch.setenv("STAGETUNE_DATA_DIR", str(tmp_path))
    get_data_settings.cache_clear()
    try:
        net = timm.create_model("mobilenetv3_small_050", num_classes=10, in_chans=1)
        torch.save(net.state_dict(), tmp_path / "mine.pt")
        warm = execute(TrialRequest(Task("digits", "timm", model_options={
            "arch": "mobilenetv3_small_050", "weights": "mine.pt"}), epochs=1,
            params={"batch_size": 128}))
        assert warm.status == "completed", warm.message
    finally:
        get_data_settings.cache_clear()
