"""Every registered dataset loads offline into a consistent, normalised, stratified split."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from stagetune.workers.data import DATASETS, Dataset, DataSettings, load_dataset, register_dataset
from stagetune.workers.errors import ConfigError, DataNotFoundError

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_ARCHIVES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# The datasets the package ships; tests may register plugins of their own.
BUILTIN = [n for n in DATASETS.names() if DATASETS.get(n).__module__.startswith("stagetune.workers.")]
# Datasets that only torchvision's checksummed download can provide: offline they must
# say how to get them.
NEEDS_DOWNLOAD = ("cifar10", "cifar100")
# image_folder streams by default; tests/workers/test_streaming.py checks that path.
OPTIONS = {"image_folder": {"path": "shapes", "image_size": 16, "stream": False}}
IMAGE_CLASSES = ("circle", "square", "triangle")
IMAGES_PER_CLASS = 8

# What each dataset should look like: input shape, classes (None: regression), and
# samples in train + validation together (the official test split never included).
EXPECTED: dict[str, tuple[tuple[int, ...], int | None, int]] = {
    "breast_cancer": ((30,), 2, 569),
    "diabetes": ((10,), None, 442),
    "digits": ((1, 8, 8), 10, 1797),
    "fashion_mnist": ((1, 28, 28), 10, 60000),
    "image_folder": ((3, 16, 16), len(IMAGE_CLASSES), len(IMAGE_CLASSES) * IMAGES_PER_CLASS),
    "mnist": ((1, 28, 28), 10, 60000),
    "mnist1d": ((1, 40), 10, 5000),
    "synthetic": ((16,), 3, 512),
    "wine": ((13,), 3, 178),
}



def _write_images(folder: Path) -> None:
    """A few PNGs per class, in several sizes and colour modes (ImageFolder converts to RGB)."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(IMAGE_CLASSES):
        (folder / name).mkdir(parents=True)
        for i in range(IMAGES_PER_CLASS):
            h, w = 12 + 2 * i, 20 - i
            pixels = rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8)
            pixels[..., c] = 255  # one dominant channel per class
            mode = ("RGB", "L", "RGBA")[i % 3]
            Image.fromarray(pixels).convert(mode).save(folder / name / f"{i}.png")


@pytest.fixture(scope="session")
def data_settings(tmp_path_factory: pytest.TempPathFactory) -> DataSettings:
    """A data folder holding what the file-based datasets need, built offline.

    MNIST gets Fashion-MNIST's archives: the same idx format under MNIST's names.
    """
    root = tmp_path_factory.mktemp("data")
    mnist_raw = root / "MNIST" / "raw"
    mnist_raw.mkdir(parents=True)
    for archive in IDX_ARCHIVES:
        shutil.copy(SYSTEM_FASHION_MNIST / archive, mnist_raw / archive)
    _write_images(root / "shapes")
    return DataSettings(data_dir=root, allow_download=False,
                        fashion_mnist_system_dir=SYSTEM_FASHION_MNIST)


def _check_normalised(data: Dataset) -> None:
    dims = [0, *range(2, data.x_train.dim())] if data.is_image else [0]
    mean, std = data.x_train.mean(dim=dims), data.x_train.std(dim=dims)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-3)
    assert torch.allclose(std, torch.ones_like(std), atol=1e-3)
    # `mean` and `std` broadcast over one sample, so augmentations can undo them.
    assert (data.x_train[:2] * data.std + data.mean).shape == data.x_train[:2].shape


def _check_classification(data: Dataset) -> None:
    k = data.num_classes
    assert data.y_train.dtype == data.y_val.dtype == torch.long
    assert data.num_outputs == k and len(data.label_prior) == k
    assert math.isclose(sum(data.label_prior), 1.0, abs_tol=1e-9)
    counts = torch.bincount(data.y_train, minlength=k)
    assert data.label_prior == pytest.approx((counts / len(data.y_train)).tolist())
    assert 0 < data.expected_initial_loss <= math.log(k) + 1e-9
    # Stratified: each class's share differs between the splits by at most one sample's worth.
    val_share = torch.bincount(data.y_val, minlength=k) / len(data.y_val)
    slack = 1 / len(data.y_val) + 1 / len(data.y_train) + 1e-9
    assert (val_share - torch.tensor(data.label_prior)).abs().max() <= slack
    assert int(data.y_train.min()) == int(data.y_val.min()) == 0
    assert int(data.y_train.max()) == int(data.y_val.max()) == k - 1


def _check_regression(data: Dataset) -> None:
    assert data.num_outputs == 1 and data.label_prior == ()
    assert data.y_train.dtype == data.y_val.dtype == torch.float32
    assert float(data.y_train.mean()) == pytest.approx(0, abs=1e-5)
    assert float(data.y_train.std()) == pytest.approx(1, abs=1e-5)
    assert data.target_std > 1
    n = len(data.y_train)  # a constant guess's MSE: the population variance of unit-std labels
    assert data.expected_initial_loss == pytest.approx((n - 1) / n, abs=1e-4)


@pytest.mark.parametrize("name", [n for n in BUILTIN if n not in NEEDS_DOWNLOAD])
def test_dataset_loads_with_consistent_facts(name: str, data_settings: DataSettings) -> None:
    data = load_dataset(name, OPTIONS.get(name), settings=data_settings)

    assert data.name == name and name in data.describe()
    assert data.x_train.dtype == data.x_val.dtype == torch.float32
    assert data.x_train.shape[1:] == data.x_val.shape[1:] == data.input_shape
    assert len(data.x_train) == len(data.y_train) and len(data.x_val) == len(data.y_val)
    assert torch.isfinite(data.x_train).all() and torch.isfinite(data.x_val).all()
    assert data.is_image == (len(data.input_shape) == 3)
    total = len(data.x_train) + len(data.x_val)
    assert len(data.x_val) == math.ceil(0.2 * total)  # the default val_fraction
    _check_normalised(data)
    if data.task == "classification":
        _check_classification(data)
    else:
        assert data.task == "regression"
        _check_regression(data)
    shape, classes, samples = EXPECTED[name]
    assert (data.input_shape, total) == (shape, samples)
    assert data.task == ("regression" if classes is None else "classification")
    if classes is not None:
        assert data.num_classes == classes


def test_every_dataset_is_covered() -> None:
    covered = set(EXPECTED) | set(NEEDS_DOWNLOAD)
    assert covered == set(BUILTIN), "add the new dataset to EXPECTED or NEEDS_DOWNLOAD"


@pytest.mark.parametrize("name", NEEDS_DOWNLOAD)
def test_download_only_dataset_says_how_to_get_it(name: str, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="STAGETUNE_ALLOW_DOWNLOAD") as info:
        load_dataset(name, settings=DataSettings(data_dir=tmp_path, allow_download=False))
    # where to put the files, relative to the data folder: messages name no server path
    assert "in the data folder" in str(info.value) and str(tmp_path) not in str(info.value)


@pytest.mark.parametrize(("name", "folder"), [("cifar10", "cifar-10-batches-py"),
                                              ("cifar100", "cifar-100-python")])
def test_corrupt_cifar_folder_raises_data_not_found(name: str, folder: str, tmp_path: Path) -> None:
    (tmp_path / folder).mkdir()  # present but empty: torchvision's checksums fail
    with pytest.raises(DataNotFoundError, match="STAGETUNE_ALLOW_DOWNLOAD"):
        load_dataset(name, settings=DataSettings(data_dir=tmp_path, allow_download=False))


def test_mnist_without_files_says_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="STAGETUNE_ALLOW_DOWNLOAD"):
        load_dataset("mnist", settings=DataSettings(data_dir=tmp_path, allow_download=False))


def test_fashion_mnist_without_system_package_says_how_to_get_it(tmp_path: Path) -> None:
    settings = DataSettings(data_dir=tmp_path, fashion_mnist_system_dir=tmp_path / "absent")
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", settings=settings)


def test_fashion_mnist_is_extracted_into_the_data_folder(data_settings: DataSettings) -> None:
    load_dataset("fashion_mnist", settings=data_settings)
    raw = data_settings.data_dir / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(a.removesuffix(".gz") for a in IDX_ARCHIVES)


@pytest.mark.parametrize("path", ["../outside", "/", ""])
def test_image_folder_path_must_stay_inside_the_data_folder(path: str, data_settings: DataSettings) -> None:
    with pytest.raises(ConfigError, match="inside the data folder"):
        load_dataset("image_folder", {"path": path}, settings=data_settings)


def test_image_folder_absolute_path_elsewhere_is_refused(
    data_settings: DataSettings, tmp_path: Path
) -> None:
    _write_images(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="inside the data folder"):
        load_dataset("image_folder", {"path": str(tmp_path / "elsewhere")}, settings=data_settings)


def test_image_folder_link_out_of_the_data_folder_is_refused(tmp_path: Path) -> None:
    _write_images(tmp_path / "outside")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ConfigError, match="inside the data folder"):
        load_dataset("image_folder", {"path": "link"}, settings=DataSettings(data_dir=tmp_path / "data"))


def test_image_folder_errors_name_the_problem(tmp_path: Path) -> None:
    settings = DataSettings(data_dir=tmp_path)
    # missing or outside the data folder: the same message, which names no server folder
    for path in ("missing", "../elsewhere", "/etc"):
        with pytest.raises(ConfigError, match=f"no folder '{path}' in the data folder;.*with "
                                              "one subfolder per class"):
            load_dataset("image_folder", {"path": path}, settings=settings)
    _write_images(tmp_path / "one")
    for name in IMAGE_CLASSES[1:]:
        shutil.rmtree(tmp_path / "one" / name)
    with pytest.raises(ConfigError, match="at least two class subfolders"):
        load_dataset("image_folder", {"path": "one"}, settings=settings)
    _write_images(tmp_path / "two")
    with pytest.raises(ConfigError, match=r"image_size must lie in \[4, 1024\]"):
        load_dataset("image_folder", {"path": "two", "image_size": 2}, settings=settings)


def test_synthetic_options_shape_the_data() -> None:
    images = load_dataset(
        "synthetic", {"samples": 200, "features": 12, "num_classes": 4, "shape": [3, 2, 2]}
    )
    assert (images.input_shape, images.num_classes, images.is_image) == ((3, 2, 2), 4, True)
    assert images.mean.shape == (3, 1, 1)  # one statistic per channel
    _check_normalised(images)

    sequences = load_dataset("synthetic", {"features": 12, "shape": [2, 6]})
    assert (sequences.input_shape, sequences.is_image) == ((2, 6), False)

    regression = load_dataset("synthetic", {"samples": 100, "features": 5, "regression": True})
    assert regression.task == "regression" and regression.input_shape == (5,)
    _check_regression(regression)


@pytest.mark.parametrize(("options", "message"), [
    ({"features": 12, "shape": [5, 5]}, "must hold exactly 12 features"),
    ({"samples": 5}, "samples >= 10"),
    ({"num_classes": 1}, "num_classes >= 2"),
])
def test_synthetic_rejects_impossible_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_dataset("synthetic", options)


def test_mnist1d_options_are_passed_to_the_generator() -> None:
    data = load_dataset("mnist1d", {"samples": 1000, "seed": 1})
    other = load_dataset("mnist1d", {"samples": 1000, "seed": 2})
    assert len(data.x_train) + len(data.x_val) == 1000
    assert not torch.equal(data.x_train, other.x_train)


def test_normalisation_uses_training_statistics_only() -> None:
    data = load_dataset("digits")
    # Validation went through the same transform: undone, it gives digits' integer pixels.
    pixels = data.x_val * data.std + data.mean
    assert torch.allclose(pixels, pixels.round(), atol=1e-3)
    assert pixels.min() >= 0 and pixels.max() <= 16
    # ...but its statistics were not used: only the training split is exactly centred.
    assert abs(float(data.x_train.mean())) < 1e-5
    assert abs(float(data.x_val.mean())) > 1e-3


def test_unknown_dataset_lists_registered_names() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'digitz'") as info:
        load_dataset("digitz")
    for name in DATASETS.names():
        assert name in str(info.value)


def test_unknown_option_lists_allowed_options() -> None:
    with pytest.raises(ConfigError, match="dataset 'synthetic' has no option 'sampels'") as info:
        load_dataset("synthetic", {"sampels": 100})
    for option in ("samples", "features", "shape", "classes", "subset", "val_fraction"):
        assert option in str(info.value)


@pytest.mark.parametrize("classes", [[5, 6, 7, 8, 9], [9, 5]])
def test_classes_keeps_those_labels_and_renumbers_them(classes: list[int]) -> None:
    data = load_dataset("digits", {"classes": classes})
    assert data.num_classes == len(classes)
    assert set(data.y_train.tolist()) == set(data.y_val.tolist()) == set(range(len(classes)))

    digits = load_digits()
    assert len(data.x_train) + len(data.x_val) == np.isin(digits.target, classes).sum()
    raw = torch.as_tensor(digits.images, dtype=torch.float32).flatten(1)
    pixels = (data.x_train * data.std + data.mean).round().flatten(1)
    for image, label in zip(pixels[:30], data.y_train[:30], strict=True):
        originals = digits.target[(raw == image).all(dim=1).numpy()]
        assert classes[int(label)] in originals.tolist()


@pytest.mark.parametrize("classes", [[5], [3, 3], [1, 42]])
def test_classes_needs_two_present_labels(classes: list[int]) -> None:
    with pytest.raises(ConfigError, match="at least two distinct labels"):
        load_dataset("digits", {"classes": classes})


def test_classes_is_refused_for_regression() -> None:
    with pytest.raises(ConfigError, match="classification datasets only"):
        load_dataset("diabetes", {"classes": [0, 1]})


def test_subset_and_val_subset_cap_both_splits_stratified() -> None:
    data = load_dataset("digits", {"subset": 100, "val_subset": 50})
    assert (len(data.x_train), len(data.x_val)) == (100, 50)
    assert torch.bincount(data.y_train).tolist() == [10] * 10
    assert torch.bincount(data.y_val).tolist() == [5] * 10


@pytest.mark.parametrize(("subset", "expected"), [(5, 5), (1430, 1430), (1436, 1436), (10**6, 1437)])
def test_subset_takes_any_size(subset: int, expected: int) -> None:
    # Near the full size the dropped remainder cannot hold every class; still allowed.
    data = load_dataset("digits", {"subset": subset})
    assert len(data.x_train) == expected


@pytest.mark.parametrize("option", ["subset", "val_subset"])
def test_subset_must_be_positive(option: str) -> None:
    with pytest.raises(ConfigError, match=f"{option} must be at least 1"):
        load_dataset("digits", {option: 0})


@pytest.mark.parametrize("fraction", [0, 1, 1.5])
def test_val_fraction_must_lie_between_zero_and_one(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"val_fraction must lie in \(0, 1\)"):
        load_dataset("wine", {"val_fraction": fraction})


@pytest.mark.parametrize("fraction", [0.005, 0.995])
def test_val_fraction_must_leave_every_class_on_both_sides(fraction: float) -> None:
    with pytest.raises(ConfigError, match="needs each of the 10 classes on both sides"):
        load_dataset("digits", {"val_fraction": fraction})


def test_a_class_with_one_image_cannot_be_split(tmp_path: Path) -> None:
    _write_images(tmp_path / "few")
    for image in list((tmp_path / "few" / "circle").iterdir())[1:]:
        image.unlink()
    with pytest.raises(ConfigError, match="fewest samples in a class: 1"):
        load_dataset("image_folder", {"path": "few"}, settings=DataSettings(data_dir=tmp_path))


def test_split_seed_decides_the_split() -> None:
    first = load_dataset("digits", {"split_seed": 3})
    again = load_dataset("digits", {"split_seed": 3, "val_fraction": 0.2})  # not the cached one
    other = load_dataset("digits", {"split_seed": 4})
    assert again is not first
    assert torch.equal(first.x_val, again.x_val) and torch.equal(first.y_train, again.y_train)
    assert not torch.equal(first.x_val, other.x_val)


def test_load_is_cached_per_options() -> None:
    assert load_dataset("wine") is load_dataset("wine", {})
    assert load_dataset("wine") is not load_dataset("wine", {"split_seed": 1})


def test_register_dataset_refuses_a_duplicate_name() -> None:
    original = DATASETS.get("digits")
    with pytest.raises(ConfigError, match="dataset 'digits' is already registered"):
        register_dataset("digits")(original)
    assert DATASETS.get("digits") is original
