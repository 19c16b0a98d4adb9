"""The data check on real data: planted leaks, duplicates with other labels, broken columns
and raw scale are named with their numbers; the built-in datasets pass."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn import datasets as skdatasets
from torch.utils.data import TensorDataset

from stagetune.workers import ConfigError, Task, TrialRequest, TrialResult, execute
from stagetune.workers.data import DATASETS, DataSettings, RawData, StreamData, load_dataset, register_dataset
from stagetune.workers.data_check import check_dataset
from tests.workers import trainer_plugin  # noqa: F401  (registers the trainers)

if "wine_broken" not in DATASETS:  # process-wide registry: once

    @register_dataset("wine_broken")
    def wine_broken(*, settings: DataSettings) -> RawData:
        """Wine with NaN in a fifth of column 0, and column 1 set to one value."""
        x, y = skdatasets.load_wine(return_X_y=True)
        x = x.copy()
        x[::5, 0] = np.nan
        x[:, 1] = 3.0
        return RawData(x, y, "classification")

    @register_dataset("digits_leaky_stream")
    def digits_leaky_stream(*, settings: DataSettings) -> StreamData:
        """Digits streamed with its own validation split, 40 of whose 360 rows were also
        put into training."""
        x, y = skdatasets.load_digits(return_X_y=True)
        x = torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8)
        y = torch.as_tensor(y)
        train, val = slice(0, 1437), slice(1437, None)
        x_t, y_t = torch.cat([x[train], x[val][:40]]), torch.cat([y[train], y[val][:40]])
        return StreamData(TensorDataset(x_t, y_t), TensorDataset(x[val], y[val]),
                          num_classes=10, is_image=True)


def check(dataset: str, **options: object) -> TrialResult:
    return execute(TrialRequest(Task(dataset, "mlp"), mode="data_check", options=options))


def finding(result: TrialResult, name: str) -> dict:
    (found,) = [f for f in result.probe["findings"] if f["check"] == name]
    return found


def verdicts(result: TrialResult) -> dict[str, str]:
    return {f["check"]: f["verdict"] for f in result.probe["findings"]}


@pytest.mark.parametrize("dataset", ["digits", "mnist1d", "breast_cancer", "wine", "diabetes"])
def test_the_builtin_datasets_pass(dataset: str) -> None:
    result = check(dataset)
    assert result.status == "passed", result.message
    assert result.message.startswith("No leaks, duplicates, conflicting labels")
    assert not {"warned", "failed"} & set(verdicts(result).values())
    assert result.probe["epochs_equivalent"] == 0.0


def test_validation_rows_copied_into_training_fail_with_the_count() -> None:
    data = load_dataset("digits")
    copied = data.val_size // 10  # 36 of 360
    leaky = replace(data, x_train=torch.cat([data.x_train, data.x_val[:copied]]),
                    y_train=torch.cat([data.y_train, data.y_val[:copied]]))
    result = check_dataset(leaky)
    assert result.status == "failed"
    leaks = finding(result, "leaks")
    assert leaks["verdict"] == "failed" and leaks["exact"] == copied
    assert leaks["share"] == pytest.approx(0.1)
    assert f"{copied} of 360 validation samples are exact copies of training samples (10.0%" \
        in result.message
    assert "Remove the copies" in result.message
    for t, v in leaks["examples"]:  # each example pair is a real copy
        assert torch.equal(leaky.x_train[t], leaky.x_val[v])
    # training read in part (its first rows: a split is in random order, so shuffle the
    # copies in): the share is estimated from the part read
    order = torch.randperm(leaky.train_size, generator=torch.Generator().manual_seed(0))
    shuffled = replace(leaky, x_train=leaky.x_train[order], y_train=leaky.y_train[order])
    sampled = check_dataset(shuffled, samples=500)
    assert sampled.status == "failed" and "estimated" in sampled.message
    assert "(checked 500 of 1,473 training and 360 of 360 validation rows)" in sampled.message
    assert 0.05 < finding(sampled, "leaks")["share"] < 0.2
    # two copies: below the 1% rule, a warning; a looser rule lets ten percent through
    two = replace(data, x_train=torch.cat([data.x_train, data.x_val[:2]]),
                  y_train=torch.cat([data.y_train, data.y_val[:2]]))
    assert finding(check_dataset(two), "leaks")["verdict"] == "warned"
    assert finding(check_dataset(leaky, leak_share=0.2), "leaks")["verdict"] == "warned"


def test_near_copies_are_found_by_the_coarse_hash() -> None:
    data = load_dataset("digits")
    noise = 0.01 * torch.randn(36, *data.input_shape, generator=torch.Generator().manual_seed(0))
    near = replace(data, x_train=torch.cat([data.x_train, data.x_val[:36] + noise]),
                   y_train=torch.cat([data.y_train, data.y_val[:36]]))
    leaks = finding(check_dataset(near), "leaks")
    assert leaks["exact"] == 0 and leaks["near"] >= 30  # a value may round the other way
    assert leaks["verdict"] == "warned" and "near-copies" in leaks["message"]


def test_a_streamed_dataset_with_leaks_fails_through_execute() -> None:
    result = check("digits_leaky_stream")
    assert result.status == "failed"
    assert finding(result, "leaks")["exact"] == 40
    assert "40 of 360 validation samples are exact copies" in result.message


def test_duplicates_with_other_labels_are_named() -> None:
    data = load_dataset("digits")
    rows = torch.arange(50)
    other = (data.y_train[rows] + 1 + torch.randperm(50, generator=torch.Generator().manual_seed(0))
             % 9) % 10  # a shuffled label, never the right one
    shuffled = replace(data, x_train=torch.cat([data.x_train, data.x_train[rows]]),
                       y_train=torch.cat([data.y_train, other]))
    result = check_dataset(shuffled)
    assert result.status == "warned"
    seen = verdicts(result)
    assert seen["conflicting_labels"] == "warned" and seen["train_duplicates"] == "warned"
    assert seen["leaks"] == "passed"
    assert "50 inputs appear with different labels (100 samples" in result.message
    assert "50 training samples (3.4% of the 1,487 read) are exact copies" in result.message
    assert finding(result, "conflicting_labels")["examples"][0][:2] == ["train 0", "train 1437"]


def test_a_nan_column_and_a_constant_column_are_named() -> None:
    result = check("wine_broken")
    assert result.status == "failed"  # NaN inputs: the study cannot run
    non_finite, constant = finding(result, "non_finite"), finding(result, "constant_features")
    assert non_finite["verdict"] == "failed" and non_finite["features"] == [0]
    # a NaN spoils the column's mean: every value of it is NaN once standardised
    assert non_finite["values"] == 178
    assert "178 input values are NaN or inf, in 1 feature (e.g. [0])" in result.message
    assert constant["verdict"] == "warned" and constant["features"] == [1]
    assert "1 of 13 features are constant in the 142 training rows read (features [1])" \
        in result.message
    assert finding(result, "leaks")["verdict"] == "passed"


def test_breast_cancer_raw_scale_is_information_not_a_warning() -> None:
    result = check("breast_cancer")
    scale = finding(result, "input_scale")
    assert result.status == "passed" and scale["verdict"] == "info"
    assert scale["raw_std_min"] < 0.01 and scale["raw_std_max"] > 500 and scale["decades"] > 5
    assert scale["raw_mean_max"] > 800
    assert "orders of magnitude): the loader standardises each" in result.message
    assert scale["max_abs_standardised"] < 50


def test_heavy_tails_beyond_standardising_warn() -> None:
    data = load_dataset("breast_cancer")
    x_val = data.x_val.clone()
    x_val[0, 3] = 400.0  # 400 training stds out
    result = check_dataset(replace(data, x_val=x_val))
    assert finding(result, "input_scale")["verdict"] == "warned"
    assert "400 stds from the mean" in result.message


def test_a_class_missing_from_validation_and_a_rare_class_warn() -> None:
    data = load_dataset("digits")
    keep = data.y_val != 3
    gone = replace(data, x_val=data.x_val[keep], y_val=data.y_val[keep])
    balance = finding(check_dataset(gone), "class_balance")
    assert balance["verdict"] == "warned" and "Classes [3] never occur in validation" \
        in balance["message"]
    first = int((data.y_train == 0).nonzero()[0])
    rare = (data.y_train != 0) | (torch.arange(data.train_size) == first)  # one of class 0
    skewed = replace(data, x_train=data.x_train[rare], y_train=data.y_train[rare])
    balance = finding(check_dataset(skewed), "class_balance")
    assert balance["verdict"] == "warned" and balance["smallest"] == 0
    assert "Class 0 holds only" in balance["message"] and "val_macro_f1" in balance["message"]


def test_a_trainer_without_a_dataset_is_skipped_saying_why() -> None:
    result = execute(TrialRequest(Task(None, None, trainer="own_loop"), mode="data_check"))
    assert result.status == "skipped"
    assert "the trainer loads its own data" in result.message
    on_digits = execute(TrialRequest(Task("digits", None, trainer="own_loop"), mode="data_check"))
    assert on_digits.status == "passed"


def test_options_are_checked_and_the_sample_is_capped() -> None:
    with pytest.raises(ConfigError, match="no option 'rows'.*allowed: samples, leak_share"):
        check("digits", rows=10)
    with pytest.raises(ConfigError, match="at least 10"):
        check("digits", samples=1)
    capped = check("digits", samples=200)
    assert capped.probe["train_rows"] == 200 and capped.probe["val_rows"] == 200
