"""Transfer learning: a convnet trained on digits 0-4 is reused for digits 5-9."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from stagetune.workers.config import parse_params
from stagetune.workers.data import Dataset, load_dataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.models import body_blocks, build_model, parameter_groups, set_train_mode
from stagetune.workers.optim import build_optimizer
from stagetune.workers.runtime import seed_everything
from stagetune.workers.train import train

CPU = torch.device("cpu")
SOURCE = {"classes": [0, 1, 2, 3, 4]}
TARGET = {"classes": [5, 6, 7, 8, 9]}
EPOCHS = 6
LR = 1e-2
# Final validation accuracy on 5 classes (chance 0.2). Measured over 3 pretraining x 3
# fine-tuning seeds: feature_extraction 0.83-0.87, top_blocks and full 0.99-1.0.
MIN_ACCURACY = {"feature_extraction": 0.75, "top_blocks": 0.95, "full": 0.95}
# How many body blocks (stem + 2 conv blocks) stay frozen; top_blocks unfreezes 1 by default.
FROZEN_BLOCKS = {"feature_extraction": 3, "top_blocks": 2, "full": 0}



@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A convnet trained on digits 0-4, saved as a state_dict."""
    data = load_dataset("digits", SOURCE)
    train_cfg, model_cfg = parse_params({})
    generator = seed_everything(0)
    model = build_model("convnet", data, model_cfg)
    outcome = train(model, data, train_cfg, model_cfg, 5, CPU, generator)
    assert outcome.history[-1]["val_accuracy"] > 0.95
    path = tmp_path_factory.mktemp("weights") / "digits-0-4.pt"
    torch.save(model.state_dict(), path)
    return path


def _build(params: dict[str, Any], model: str = "convnet") -> tuple[nn.Module, Dataset, Any, Any]:
    data = load_dataset("digits", TARGET)
    train_cfg, model_cfg = parse_params({"lr": LR, **params})
    seed_everything(0)
    return build_model(model, data, model_cfg), data, train_cfg, model_cfg


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("strategy", list(MIN_ACCURACY))
def test_transfer_freezes_the_right_blocks_and_learns_the_new_classes(
    strategy: str, weights: Path
) -> None:
    model, data, train_cfg, model_cfg = _build({"weights": str(weights), "transfer": strategy})
    blocks = body_blocks(model)
    assert len(blocks) == 3
    saved = torch.load(weights, weights_only=True)
    for name, tensor in model.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(tensor, saved[name]), f"{name} was not loaded from the file"
    before = [_snapshot(block) for block in blocks]
    head_before = _snapshot(model.get_submodule("head"))

    outcome = train(model, data, train_cfg, model_cfg, EPOCHS, CPU, torch.Generator().manual_seed(0))

    assert outcome.status == "completed", outcome.message
    assert outcome.history[-1]["val_accuracy"] > MIN_ACCURACY[strategy]
    frozen = FROZEN_BLOCKS[strategy]
    for i, (block, old) in enumerate(zip(blocks, before, strict=True)):
        now = block.state_dict()
        assert any(k.endswith("running_mean") for k in old)  # each block has batch norm
        if i < frozen:
            assert not any(p.requires_grad for p in block.parameters())
            for key in old:  # weights and batch-norm statistics alike
                assert torch.equal(now[key], old[key]), f"frozen block {i}: {key} changed"
        else:
            assert all(p.requires_grad for p in block.parameters())
            for key in old:
                if not key.endswith("num_batches_tracked"):
                    assert not torch.equal(now[key], old[key]), f"block {i}: {key} did not train"
    head_now = model.get_submodule("head").state_dict()
    for key, value in head_before.items():
        assert not torch.equal(head_now[key], value), f"head {key} did not train"


def test_frozen_batch_norm_stays_in_eval_mode(weights: Path) -> None:
    model, *_ = _build({"weights": str(weights), "transfer": "top_blocks"})
    set_train_mode(model)
    norms = [[m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
             for block in body_blocks(model)]
    assert [all(not m.training for m in block) for block in norms] == [True, True, False]
    assert model.get_submodule("head").training


def test_replaced_head_has_a_hidden_layer_for_the_new_classes(weights: Path) -> None:
    model, *_ = _build({"weights": str(weights), "transfer": "full", "head_hidden": 64})
    assert _head_shapes(model) == [(32, 64), (64, 5)]
    linear, *_ = _build({"weights": str(weights), "transfer": "full", "head_hidden": 0})
    assert _head_shapes(linear) == [(32, 5)]


def _head_shapes(model: nn.Module) -> list[tuple[int, int]]:
    head = model.get_submodule("head")
    return [(m.in_features, m.out_features) for m in head.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("strategy", ["full", "top_blocks"])
def test_layer_lr_decay_gives_lower_blocks_smaller_learning_rates(
    strategy: str, weights: Path
) -> None:
    params = {"weights": str(weights), "transfer": strategy, "layer_lr_decay": 0.5}
    model, _, train_cfg, model_cfg = _build(params)
    expected = {id(p): LR for p in model.get_submodule("head").parameters()}
    for k, block in enumerate(reversed(body_blocks(model)), start=1):
        expected |= {id(p): LR * 0.5**k for p in block.parameters() if p.requires_grad}

    optimizer = build_optimizer(model, train_cfg, model_cfg)

    seen = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert group["lr"] == pytest.approx(expected[id(p)]), group["name"]
            assert group["weight_decay"] == (train_cfg.weight_decay if p.ndim > 1 else 0.0)
            seen.append(id(p))
    assert sorted(seen) == sorted(expected)  # every trainable parameter once, no frozen one
    lrs = sorted({round(g["lr"] / LR, 6) for g in optimizer.param_groups}, reverse=True)
    assert lrs == ([1, 0.5, 0.25, 0.125] if strategy == "full" else [1, 0.5])


def test_without_layer_lr_decay_every_group_has_the_base_lr(weights: Path) -> None:
    model, *_ = _build({"weights": str(weights), "transfer": "full"})
    groups = parameter_groups(model, LR, 1e-4, layer_lr_decay=1.0)
    assert {g["lr"] for g in groups} == {LR}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.mark.parametrize("wrapped", [False, True])
def test_weights_without_transfer_load_every_tensor(wrapped: bool, weights: Path, tmp_path: Path) -> None:
    state = torch.load(weights, weights_only=True)
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": state, "epoch": 5} if wrapped else state, path)
    model = build_model("convnet", load_dataset("digits", SOURCE), parse_params({"weights": str(path)})[1])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert all(p.requires_grad for p in model.parameters())


def test_weights_from_another_architecture_name_the_mismatched_keys(tmp_path: Path) -> None:
    mlp, *_ = _build({}, model="mlp")
    path = tmp_path / "mlp.pt"
    torch.save(mlp.state_dict(), path)
    with pytest.raises(ConfigError, match="does not match the model") as info:
        _build({"weights": str(path), "transfer": "full"})
    message = str(info.value)
    assert "missing stem.0.weight" in message
    assert re.search(r"; and \d+ more$", message)  # five problems shown, the rest counted


def test_weights_of_another_width_name_the_mismatched_shapes(tmp_path: Path) -> None:
    narrow, *_ = _build({"width": 16})
    path = tmp_path / "narrow.pt"
    torch.save(narrow.state_dict(), path)
    with pytest.raises(ConfigError, match=r"stem.0.weight: file has \(16, 1, 3, 3\), model has \(32, 1, 3, 3\)"):
        _build({"weights": str(path), "transfer": "full"})


def test_weights_with_a_different_head_need_a_transfer_strategy(weights: Path) -> None:
    with pytest.raises(ConfigError, match=r"head.weight: file has \(5, 32\), model has \(10, 32\)"):
        build_model("convnet", load_dataset("digits"), parse_params({"weights": str(weights)})[1])


def test_missing_weights_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; give a local state_dict file"):
        _build({"weights": str(tmp_path / "absent.pt"), "transfer": "full"})


def test_a_file_that_is_not_a_state_dict_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="is not a PyTorch state_dict"):
        _build({"weights": str(path), "transfer": "full"})


@pytest.mark.parametrize("strategy", list(MIN_ACCURACY))
def test_transfer_without_weights_is_a_config_error(strategy: str) -> None:
    with pytest.raises(ConfigError, match=f"transfer '{strategy}' needs weights=PATH"):
        _build({"transfer": strategy})
