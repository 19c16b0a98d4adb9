"""Datasets that ship with scikit-learn, and a synthetic one for tests."""

from __future__ import annotations

import numpy as np
from sklearn import datasets as skdatasets

from stagetune.workers.data._base import RawData
from stagetune.workers.data._registry import register_dataset
from stagetune.workers.data._settings import DataSettings
from stagetune.workers.errors import ConfigError


@register_dataset("digits")
def digits(*, settings: DataSettings) -> RawData:
    """1,797 8x8 grey images of handwritten digits."""
    bunch = skdatasets.load_digits()
    return RawData(bunch.images[:, None, :, :], bunch.target, "classification", is_image=True)


@register_dataset("breast_cancer")
def breast_cancer(*, settings: DataSettings) -> RawData:
    """569 tumours, 30 features, malignant or benign."""
    x, y = skdatasets.load_breast_cancer(return_X_y=True)
    return RawData(x, y, "classification")


@register_dataset("wine")
def wine(*, settings: DataSettings) -> RawData:
    """178 wines, 13 features, 3 cultivars."""
    x, y = skdatasets.load_wine(return_X_y=True)
    return RawData(x, y, "classification")


@register_dataset("diabetes")
def diabetes(*, settings: DataSettings) -> RawData:
    """442 patients, 10 features, disease progression after a year (regression)."""
    x, y = skdatasets.load_diabetes(return_X_y=True)
    return RawData(x, y, "regression")


@register_dataset("synthetic")
def synthetic(
    *,
    settings: DataSettings,
    samples: int = 512,
    features: int = 16,
    num_classes: int = 3,
    shape: list[int] | None = None,
    regression: bool = False,
    seed: int = 0,
) -> RawData:
    """Seeded Gaussian clusters (or a linear target), optionally reshaped into images."""
    if samples < 10 or features < 1 or num_classes < 2:
        raise ConfigError("synthetic: needs samples >= 10, features >= 1 and num_classes >= 2")
    if regression:
        x, y = skdatasets.make_regression(samples, features, noise=0.1, random_state=seed)
    else:
        x, y = skdatasets.make_classification(
            samples, features, n_informative=max(2, features // 2), n_redundant=0,
            n_classes=num_classes, n_clusters_per_class=1, random_state=seed,
        )
    if shape is not None:
        if int(np.prod(shape)) != features:
            raise ConfigError(f"synthetic: shape {shape} must hold exactly {features} features")
        x = x.reshape(len(x), *shape)
    is_image = shape is not None and len(shape) == 3
    return RawData(x, y, "regression" if regression else "classification", is_image=is_image)
