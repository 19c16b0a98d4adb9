"""Every rule of the study spec a user can break gets a message naming the field."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stagetune.studies.spec import SpecError, StudySpec, load_spec
from stagetune.workers.data import get_data_settings

BASE: dict[str, Any] = {
    "name": "digits-convnet",
    "task": {"dataset": "digits", "model": "convnet"},
    "space": {
        "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
        "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
        "width": {"type": "int", "low": 16, "high": 128, "log": True},
    },
    "fixed": {"schedule": "cosine"},
}


def test_the_design_example_loads_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("""
name: digits-convnet
task: {dataset: digits, model: convnet, objective: val_accuracy}
space:
  lr:           {type: float, low: 1.0e-5, high: 1.0, log: true}
  weight_decay: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
  dropout:      {type: float, low: 0.0, high: 0.5}
  optimizer:    {type: categorical, choices: [sgd, adamw]}
  width:        {type: int, low: 16, high: 128, log: true}
fixed: {schedule: cosine}
stages:
  overfit: {samples: 64, steps: 300}
  lr_probe: {iterations: 100}
  coarse: {trials: 32, epochs: 2, sampler: qmc}
  refine: {trials: 24, epochs: 10, sampler: tpe, pruner: median, warm_start: 5}
  confirm: {top: 3, seeds: 3}
resources: {gpus_per_trial: 0.25, cpus_per_trial: 1, max_concurrent: 8}
seed: 0
""")
    spec = load_spec(path)
    assert isinstance(spec, StudySpec)
    assert spec.stages.refine.pruner == "median" and spec.resources.gpus_per_trial == 0.25


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return mutate


BAD = [
    ("unknown dataset", _set("task.dataset", "digts"), "task.dataset: unknown dataset 'digts'; registered:"),
    ("unknown model", _set("task.model", "resnt18"), "task.model: unknown model 'resnt18'; registered:"),
    ("unknown parameter", _set("space.lrr", {"type": "float", "low": 0, "high": 1}),
     "space: unknown parameter 'lrr'; known:"),
    ("unknown fixed parameter", _set("fixed.lrr", 1), "fixed: unknown parameter 'lrr'"),
    ("unknown sampler", _set("stages.coarse.sampler", "grid"), "stages.coarse.sampler: Input should be 'qmc' or 'random'"),
    ("unknown refine sampler", _set("stages.refine.sampler", "bohb"), "stages.refine.sampler: Input should be 'tpe', 'gp' or 'cmaes'"),
    ("unknown pruner", _set("stages.refine.pruner", "sha"), "stages.refine.pruner: Input should be 'asha', 'hyperband', 'median' or 'none'"),
    ("unknown stage", _set("stages.warmup", {}), "stages.warmup: unknown field; allowed here: baseline, coarse"),
    ("low >= high", _set("space.lr", {"type": "float", "low": 1.0, "high": 0.1}), "space.lr: low must be below high"),
    ("int low >= high", _set("space.width", {"type": "int", "low": 64, "high": 64}), "space.width: low must be below high"),
    ("log with low <= 0", _set("space.lr", {"type": "float", "low": 0.0, "high": 1.0, "log": True}),
     "space.lr: a log scale needs low > 0"),
    ("empty choices", _set("space.optimizer", {"type": "categorical", "choices": []}),
     "space.optimizer.choices: List should have at least 1 item"),
    ("unknown parameter type", _set("space.lr", {"type": "loguniform", "low": 1, "high": 2}), "space.lr:"),
    ("in space and fixed", _set("fixed.lr", 0.1), "'lr' is both in space and fixed"),
    ("trials below 1", _set("stages.coarse.trials", 0), "stages.coarse.trials: Input should be greater than or equal to 1"),
    ("absurd trials", _set("stages.refine.trials", 10**7), "stages.refine.trials: Input should be less than or equal to 10000"),
    ("epochs below 1", _set("stages.refine.epochs", 0), "stages.refine.epochs: Input should be greater than or equal to 1"),
    ("absurd epochs", _set("stages.coarse.epochs", 10**6), "stages.coarse.epochs: Input should be less than or equal to 1000"),
    ("bad name", _set("name", "my study!"), "name: use letters, digits, '-' and '_'"),
    ("bad fixed value", _set("fixed.norm", "batchy"), "fixed: norm: Input should be 'batch'"),
    ("custom resource without a name", _set("resources.custom", {" ": 1}),
     "resources.custom: a custom resource needs a name"),
    ("custom resource of zero", _set("resources.custom", {"a100": 0}),
     "resources.custom: 'a100' needs an amount of at least 0.0001 (got 0.0)"),
    ("custom resource below Ray's unit", _set("resources.custom", {"a100": 1e-6}),
     "resources.custom: 'a100' needs an amount of at least 0.0001"),
    ("GPU as a custom resource", _set("resources.custom", {"GPU": 1}),
     "resources.custom: 'GPU' is not a custom resource; use cpus_per_trial or gpus_per_trial"),
    ("custom resource not a number", _set("resources.custom", {"a100": "many"}),
     "resources.custom.a100: Input should be a valid number"),
    # what the workers would refuse once the study runs is refused at submit (issue 13)
    ("a range end the knob rejects", _set("space.dropout", {"type": "float", "low": 0, "high": 5}),
     "space.dropout.high: dropout: Input should be less than 1 (got 5.0)"),
    ("a choice the knob rejects", _set("space.optimizer", {"type": "categorical",
                                                           "choices": ["sgd", "adamx"]}),
     "space.optimizer.choices.1: optimizer: Input should be 'sgd'"),
    ("fractions for a whole-number knob", _set("space.width", {"type": "float", "low": 8, "high": 9}),
     "space.width: width takes no fractions"),
    ("a model option the knob rejects", _set("task.model_options", {"depth": 0}),
     "task.model_options: depth: Input should be greater than or equal to 1"),
    ("unknown dataset option", _set("task.dataset_options", {"bogus": 1}),
     "task.dataset_options: dataset 'digits' has no option 'bogus'; allowed: classes, split_seed"),
    ("dataset option of the wrong type", _set("task.dataset_options", {"subset": "all"}),
     "task.dataset_options: dataset 'digits': subset: Input should be a valid integer"),
    ("dataset option out of its range", _set("task.dataset_options", {"val_fraction": 1.5}),
     "task.dataset_options: digits: val_fraction must lie in (0, 1) (got 1.5)"),
    ("unknown torchvision arch", lambda s: (_set("task.model", "torchvision")(s),
                                            _set("fixed.arch", "os.system")(s)),
     "fixed.arch: unknown torchvision arch 'os.system'; available: alexnet"),
    ("NaN in fixed", _set("fixed.warmup_epochs", math.nan),
     "fixed.warmup_epochs: nan is not allowed; give a finite number"),
    ("infinity in a space", _set("space.width", {"type": "int", "low": 1, "high": math.inf}),
     "space.width.high: inf is not allowed"),
    ("seed past 2**32 - 1", _set("seed", 2**32), "seed: Input should be less than or equal to 4294967295"),
    ("a seed of 5,000 digits", _set("seed", 10**5000), "(got a number of about 5000 digits)"),
    ("transfer without weights", _set("fixed.transfer", "full"),
     "fixed.transfer: transfer 'full' needs weights=PATH, a state_dict file in the data folder"),
    ("weights outside the data folder", _set("fixed.weights", "/etc/passwd"),
     "fixed.weights: weights: no file '/etc/passwd' in the data folder"),
    ("nesting past 32 levels", _set("task.dataset_options", {"classes": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}),
     "nested deeper than 32 levels"),
]


@pytest.mark.parametrize("what, mutate, message", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_gets_its_message(what: str, mutate: Callable[[dict[str, Any]], None],
                                   message: str) -> None:
    spec = copy.deepcopy(BASE)
    mutate(spec)
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert message in str(info.value)


def test_every_problem_names_its_field_apart_from_its_sentence() -> None:
    spec = copy.deepcopy(BASE)
    spec["fixed"] = {"lr": 0.1, "dropout": 2.0}
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert info.value.problems == [("fixed", "'lr' is both in space and fixed; keep it in one "
                                             "of them")]


def test_the_widest_seed_and_weights_inside_the_data_folder_are_accepted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGETUNE_DATA_DIR", str(tmp_path / "data"))
    get_data_settings.cache_clear()
    try:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "start.pt").write_bytes(b"weights")
        (tmp_path / "elsewhere.pt").write_bytes(b"weights")
        (tmp_path / "data" / "link.pt").symlink_to(tmp_path / "elsewhere.pt")
        spec = {**copy.deepcopy(BASE), "seed": 2**32 - 1}
        spec["fixed"] = {"weights": "start.pt", "transfer": "full"}
        assert load_spec(spec).seed == 2**32 - 1
        messages = []
        for path in ["link.pt", str(tmp_path / "elsewhere.pt"), "absent.pt", "../elsewhere.pt"]:
            spec["fixed"]["weights"] = path
            with pytest.raises(SpecError) as info:
                load_spec(spec)
            messages.append(str(info.value).replace(repr(path), "PATH"))
        assert len(set(messages)) == 1 and str(tmp_path) not in messages[0]
    finally:
        get_data_settings.cache_clear()


def test_a_yaml_alias_bomb_file_is_refused_before_it_expands(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    rows = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 8)]
    bomb.write_text("\n".join(["name: bomb", *rows]))
    with pytest.raises(SpecError, match="expands to about .* bytes with its YAML aliases"):
        load_spec(bomb)


def test_custom_resources_are_kept_as_numbers() -> None:
    spec = copy.deepcopy(BASE)
    spec["resources"] = {"custom": {"a100": 1, "gpu_stand_in": 0.5}}
    assert load_spec(spec).resources.custom == {"a100": 1.0, "gpu_stand_in": 0.5}
    assert load_spec(BASE).resources.custom == {}


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML or JSON"):
        load_spec(broken)
