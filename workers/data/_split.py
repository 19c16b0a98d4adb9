"""Turn raw arrays into a seeded, stratified, normalised train/validation split.

Classification splits are stratified by class; regression and multi-label splits are
plain seeded ones (a stratified multi-label split would need every label combination on
both sides)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from stagetune.workers.data._base import TASK_KINDS, Dataset, RawData
from stagetune.workers.errors import ConfigError


def make_dataset(
    name: str,
    raw: RawData,
    *,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    classes: Sequence[int] | None = None,
    subset: int | None = None,
    val_subset: int | None = None,
) -> Dataset:
    """Split, subset and normalise `raw`; statistics come from the training split only.

    `classes` keeps those labels (renumbered 0..k-1 in the given order); `subset` and
    `val_subset` cap the two splits, stratified, for quick runs on big datasets.
    """
    check_split(name, val_fraction=val_fraction, split_seed=split_seed, subset=subset,
                val_subset=val_subset)
    x, y = raw.x, raw.y
    classification = raw.task == "classification"
    if raw.task not in TASK_KINDS:
        raise ConfigError(f"{name}: task kind must be one of {', '.join(TASK_KINDS)} "
                          f"(got {raw.task!r})")
    if raw.task == "multilabel":
        _check_multilabel(name, y)
    if classes is not None:
        if not classification:
            raise ConfigError(f"{name}: 'classes' applies to classification datasets only "
                              f"({name} is {raw.task})")
        x, y = _select_classes(name, x, y, classes)
    if classification:
        _check_stratifiable(name, y, val_fraction)
    x, x_val, y, y_val = train_test_split(
        x, y, test_size=val_fraction, random_state=split_seed,
        stratify=y if classification else None,
    )
    x, y = _cap(x, y, subset, split_seed, classification)
    x_val, y_val = _cap(x_val, y_val, val_subset, split_seed, classification)
    return _normalise(name, raw, x, y, x_val, y_val)


def check_split(name: str, *, val_fraction: float = 0.2, split_seed: int = 0,
                subset: int | None = None, val_subset: int | None = None) -> None:
    """The split options' own rules, which need no data (submit checks them too)."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"{name}: val_fraction must lie in (0, 1) (got {val_fraction})")
    if not 0 <= split_seed <= 2**32 - 1:  # scikit-learn's range
        raise ConfigError(f"{name}: split_seed must lie in 0..{2**32 - 1} (got {split_seed})")
    for option, size in (("subset", subset), ("val_subset", val_subset)):
        if size is not None and size < 1:
            raise ConfigError(f"{name}: {option} must be at least 1 (got {size})")


def _check_multilabel(name: str, y: np.ndarray) -> None:
    """Multi-label targets: one row of 0/1 values per sample, at least one label."""
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] < 1:
        raise ConfigError(f"{name}: multilabel targets must have shape (samples, labels) "
                          f"(got shape {y.shape})")
    if not np.isin(y, (0, 1)).all():
        raise ConfigError(f"{name}: multilabel targets must be 0 or 1 "
                          f"(got values {np.unique(y)[:5].tolist()}...)")


def _check_stratifiable(name: str, y: np.ndarray, val_fraction: float) -> None:
    """Both splits need a sample of every class (sklearn rounds the validation side up)."""
    counts = np.unique(y, return_counts=True)[1]
    n_val = math.ceil(val_fraction * len(y))
    if min(n_val, len(y) - n_val) < len(counts) or counts.min() < 2:
        raise ConfigError(
            f"{name}: val_fraction {val_fraction} gives {len(y) - n_val} training and {n_val} "
            f"validation samples, but a stratified split needs each of the {len(counts)} classes "
            f"on both sides (fewest samples in a class: {counts.min()})"
        )


def _cap(x: np.ndarray, y: np.ndarray, size: int | None, seed: int, classification: bool
         ) -> tuple[np.ndarray, np.ndarray]:
    """At most `size` of the samples (the options' check has made it at least 1)."""
    if size is None or size >= len(x):
        return x, y
    # Stratifying needs every class on both sides of the cut, the dropped side included.
    classes = len(np.unique(y))
    stratify = y if classification and min(size, len(x) - size) >= classes else None
    x, _, y, _ = train_test_split(x, y, train_size=size, random_state=seed, stratify=stratify)
    return x, y


def _select_classes(
    name: str, x: np.ndarray, y: np.ndarray, classes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    present = set(np.unique(y).tolist())
    missing = [c for c in classes if c not in present]
    if missing or len(set(classes)) < 2:
        raise ConfigError(
            f"{name}: 'classes' needs at least two distinct labels among {sorted(present)} "
            f"(got {list(classes)})"
        )
    keep = np.isin(y, classes)
    relabel = {c: i for i, c in enumerate(classes)}
    return x[keep], np.array([relabel[int(c)] for c in y[keep]])


def _normalise(
    name: str, raw: RawData, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
) -> Dataset:
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    xv = torch.as_tensor(np.asarray(x_val, dtype=np.float32))
    # Images: one statistic per channel; anything else: one per feature.
    dims = [0, *range(2, xt.dim())] if raw.is_image else [0]
    mean = xt.mean(dim=dims, keepdim=True)[0]
    std = xt.std(dim=dims, keepdim=True)[0].clamp_min(1e-6)
    xt, xv = (xt - mean) / std, (xv - mean) / std
    if raw.task == "classification":
        yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
        yv = torch.as_tensor(np.asarray(y_val), dtype=torch.long)
        num_classes = int(max(yt.max(), yv.max())) + 1
        prior = torch.bincount(yt, minlength=num_classes).double() / len(yt)
        return Dataset(name, xt, yt, xv, yv, "classification", num_classes,
                       tuple(prior.tolist()), mean, std, raw.is_image)
    if raw.task == "multilabel":
        yt = torch.as_tensor(np.asarray(y, dtype=np.float32))
        yv = torch.as_tensor(np.asarray(y_val, dtype=np.float32))
        prior = yt.double().mean(0)  # each label's share of positives
        return Dataset(name, xt, yt, xv, yv, "multilabel", yt.shape[1],
                       tuple(prior.tolist()), mean, std, raw.is_image)
    yt = torch.as_tensor(np.asarray(y, dtype=np.float32))
    yv = torch.as_tensor(np.asarray(y_val, dtype=np.float32))
    y_mean, y_std = yt.mean(), yt.std().clamp_min(1e-6)
    return Dataset(name, xt, (yt - y_mean) / y_std, xv, (yv - y_mean) / y_std, "regression",
                   1, (), mean, std, raw.is_image, float(y_std), float(y_mean))
