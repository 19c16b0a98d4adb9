"""Checks for bug kinds the first planted suite lacked or misnamed: augmentations that break
labels, a loss that rewards large outputs, a reshape that mixes samples, a small init, a
target leak, inputs all the same, a model that ignores its input, an lr far too small; and
probes whose cost follows the data (a small dataset, no budget)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from stagetune.studies.planning.plan import PROBE_SHARES, make_plan
from stagetune.studies.spec import load_spec
from stagetune.workers import execute
from stagetune.workers.augment_check import KEEP, augmentation_check
from stagetune.workers.data import load_dataset
from stagetune.workers.data_check import check_dataset
from stagetune.workers.losses import LOSSES, resolve_loss
from stagetune.workers.probes import _causes as causes
from stagetune.workers.probes import overfit
from stagetune.workers.request import Task, TrialRequest, TrialResult
from stagetune.workers.target_leak import one_feature_decides

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "plugins"))
import planted  # noqa: E402,F401  (registers the planted datasets, models, loss, augmentation)


def test_the_built_in_augmentations_keep_digits_labels_and_a_tiny_zoom_does_not() -> None:
    data = load_dataset("digits", {})
    found = augmentation_check(data, ["crop", "cutout", "planted_tiny_zoom"])
    assert found is not None and found["verdict"] == "warned"
    assert found["kept"]["crop"] >= KEEP and found["kept"]["cutout"] >= KEEP
    assert found["kept"]["planted_tiny_zoom"] < 0.2
    assert "'planted_tiny_zoom' break the labels" in found["message"]
    assert "'crop'" not in found["message"]
    healthy = augmentation_check(data, ["crop", "cutout"])
    assert healthy is not None and healthy["verdict"] == "passed"
    assert augmentation_check(data, []) is None  # nothing to check


@pytest.mark.parametrize("loss", sorted(n for n in LOSSES.names()
                                        if "classification" in (LOSSES.entry(n).info["kinds"] or ())
                                        and not n.startswith("planted_")))
def test_no_built_in_classification_loss_rewards_large_outputs(loss: str) -> None:
    out, y = torch.randn(64, 10), torch.randint(0, 10, (64,))
    assert causes.rewards_large_outputs(resolve_loss(loss), out, y, loss) is None


def test_nll_on_raw_outputs_rewards_large_outputs_and_the_fix_is_named() -> None:
    out, y = torch.randn(64, 10), torch.randint(0, 10, (64,))
    found = causes.rewards_large_outputs(lambda o, t: F.nll_loss(o, t), out, y, "my_nll")
    assert found is not None and found.status == "failed"
    assert "log_softmax" in found.sentence
    # the fix, applied, removes the finding: the direction of the advice
    fixed = causes.rewards_large_outputs(lambda o, t: F.nll_loss(F.log_softmax(o, 1), t),
                                         out, y, "my_nll")
    assert fixed is None


def test_without_a_budget_the_probes_get_their_shares_of_the_search_cost() -> None:
    spec = load_spec({"name": "x", "task": {"dataset": "digits", "model": "mlp"}})
    plan = make_plan(spec)
    search = sum(plan[s].sizes["expected_epochs"] for s in ("coarse", "refine", "confirm"))
    whole = search / (1 - sum(PROBE_SHARES.values()))
    for probe, share in PROBE_SHARES.items():
        assert plan[probe].epochs == pytest.approx(share * whole)
    assert sum(plan[p].epochs or 0 for p in PROBE_SHARES) <= 0.12 * whole + 1e-9


def test_on_a_small_dataset_the_overfit_subset_is_a_quarter_of_it_at_most() -> None:
    request = TrialRequest(task=Task("planted_tiny", "convnet"), mode="overfit",
                           options={"samples": 64, "steps": 300})
    result = overfit(request)
    train_size = load_dataset("planted_tiny", {}).train_size
    assert result.probe["samples"] == math.floor(0.25 * train_size)
    assert result.status == "passed", result.message
    assert result.probe["epochs_equivalent"] <= 300 * result.probe["samples"] / train_size


def probe_of(mode: str, model: str = "convnet", dataset: str = "digits", **params: Any
             ) -> TrialResult:
    return execute(TrialRequest(task=Task(dataset, model), params=params, mode=mode))


def test_every_input_the_same_fails_the_data_check_first() -> None:
    result = check_dataset(load_dataset("planted_constant_inputs", {}))
    assert result.status == "failed"
    assert result.message.startswith("Every input is the same")


@pytest.mark.parametrize(("dataset", "leak"), [("planted_label_from_input", True),
                                               ("digits", False), ("breast_cancer", False),
                                               ("wine", False), ("mnist1d", False)])
def test_a_label_that_one_feature_decides_is_a_target_leak(dataset: str, leak: bool) -> None:
    data = load_dataset(dataset, {})
    found = one_feature_decides(*data.sample("train", 4000), data.num_classes)
    assert (found["verdict"] == "warned") == leak, found["message"]
    if leak:
        assert "target leak" in found["message"] and found["accuracy"] > 0.99


def test_a_model_that_ignores_its_input_is_named_not_blamed_on_depth() -> None:
    result = probe_of("init_check", "planted_input_ignored")
    assert result.status == "failed"
    assert "does not read its input" in result.message
    assert "add normalisation or skip connections" not in result.message


def test_a_small_init_is_read_against_a_standard_init_of_the_same_layers() -> None:
    result = probe_of("init_check", "planted_small_init")
    assert "standard init of the same layers" in result.message
    drift = result.probe["signal_drift"]["activations"]
    assert drift["drift"] < drift["reference_drift"] / 10
    healthy = probe_of("init_check", "mlp")
    assert "signal_drift" not in healthy.probe or "standard init" not in healthy.message


def test_a_reshape_that_mixes_samples_is_named() -> None:
    result = probe_of("init_check", "planted_batch_mixing")
    assert "depend on the rest of its batch" in result.message
    assert "reshape mixes samples" in result.message


def test_a_loss_that_never_moves_is_a_learning_rate_far_too_small_after_ten_steps() -> None:
    result = probe_of("overfit", lr=1e-7)
    assert result.status == "failed" and result.probe["stopped_by"] == "still"
    assert result.probe["steps"] == 10
    assert "learning rate is far too small (lr 1e-07)" in result.message
    assert "loss floor" not in result.message and "squashed" not in result.message


def test_a_small_head_init_is_deliberate_not_a_signal_problem() -> None:
    """A head initialised far smaller than the layers below (a transformer's std 0.02, or
    less) shrinks the last layer's outputs past the 10x rule; the drift through depth
    leaves the output layer out."""
    from torch import nn

    from stagetune.workers.probes._reference import against_reference, reference_scales
    from stagetune.workers.probes._signals import LAYERS, recording

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    nn.init.normal_(model[-1].weight, std=0.002)
    nn.init.zeros_(model[-1].bias)
    x, y = torch.randn(128, 64), torch.randint(0, 10, (128,))
    with recording(model) as record:
        record.new_forward()
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    grads = {n: float(m.weight.grad.norm()) for n, m in model.named_modules()
             if isinstance(m, LAYERS)}
    reference = reference_scales(model, x, y, F.cross_entropy)
    assert reference is not None
    act, ref_act = record.activation_std, reference[0]
    first, head = next(iter(act)), list(act)[-1]
    # counted with the head, the drift would be more than 10x off the reference's
    assert (act[head] / act[first]) / (ref_act[head] / ref_act[first]) < 0.1
    found, figures = against_reference(act, grads, reference)
    assert found is None and figures["signal_drift"]["activations"]
