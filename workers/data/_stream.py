"""Datasets that stream: map-style torch Datasets read item by item through a DataLoader.

A factory returns `StreamData` instead of `RawData` when its data does not fit in memory
as whole tensors. The loader splits it by index (never reading an item), and takes the
facts the loop and the models need (input shape, normalisation, label prior) from a
seeded sample of training items. Items stay as they are (images uint8) until a batch is
on the device, where `StreamingDataset.prepare` normalises it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from stagetune.workers.data._base import Dataset
from stagetune.workers.data._settings import get_data_settings
from stagetune.workers.data._split import _cap, _check_stratifiable, _select_classes, check_split
from stagetune.workers.errors import ConfigError

log = logging.getLogger(__name__)

STATS_ITEMS = 1000  # training items read for the normalisation and the label facts
SAMPLE_BYTES = 512 * 2**20  # the most float32 memory `sample` fills (probes, baseline)
TINY = 256  # items below which worker processes cost more than they save
MAX_WORKERS = 16
TASKS = ("classification", "regression", "multilabel")


@dataclass(frozen=True)
class StreamData:
    """What a dataset factory may return instead of `RawData`: map-style datasets of
    (x, y) items.

    x is a tensor or array (images (C, H, W); keep them uint8, they are scaled to [0, 1]
    on the device); y an int class, a float target, or for multilabel a float {0, 1}
    vector. Without `val`, validation is carved from `train` by `val_fraction` and
    `split_seed`, stratified when `train` has `targets` (as torchvision's ImageFolder).
    `num_classes` may be left out when `train` has `targets`; `num_labels` is the
    multilabel name for it.
    """

    train: TorchDataset[Any]
    val: TorchDataset[Any] | None = None
    task: str = "classification"
    num_classes: int | None = None
    is_image: bool = False
    num_labels: int | None = None


@dataclass(frozen=True, eq=False)
class StreamingDataset:
    """A streamed train/validation split with the facts of `workers.data.Dataset`.

    `mean` and `std` (broadcastable over one sample, in [0, 1] units for uint8 items)
    come from a seeded sample of training items; `prepare` applies them to a batch.
    Both splits are in a seeded random order, so their first items are a random sample.
    """

    name: str
    train: TorchDataset[Any]
    val: TorchDataset[Any]
    task: str
    num_classes: int
    label_prior: tuple[float, ...]
    mean: torch.Tensor
    std: torch.Tensor
    is_image: bool
    input_shape: tuple[int, ...]
    scale: float = 1.0  # 1/255 for uint8 items
    target_std: float = 1.0
    target_mean: float = 0.0
    # The labels of the statistics sample, as `prepare` gives them: what label statistics
    # (a loss's expected value) read. Not every training label: the stream has those.
    y_train: torch.Tensor = field(default_factory=lambda: torch.zeros(0), repr=False)
    _on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, repr=False)

    @property
    def train_size(self) -> int:
        return len(self.train)  # type: ignore[arg-type]

    @property
    def val_size(self) -> int:
        return len(self.val)  # type: ignore[arg-type]

    @property
    def num_outputs(self) -> int:
        return 1 if self.task == "regression" else self.num_classes

    @property
    def expected_initial_loss(self) -> float:
        """As `Dataset.expected_initial_loss`, from the sampled label facts."""
        from stagetune.workers.losses import DEFAULT_LOSS, LOSSES

        return float(LOSSES.entry(DEFAULT_LOSS[self.task]).info["expected"](self))

    def describe(self) -> str:
        kind = {"classification": f"{self.num_classes} classes",
                "multilabel": f"{self.num_classes} labels"}.get(self.task, "regression")
        return (f"{self.name}: {self.train_size} train / {self.val_size} validation (streamed), "
                f"input {self.input_shape}, {kind}")

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A collated batch as the model sees it, on x's device: float, normalised, and
        targets as the loss wants them (class indices, standardised values, {0, 1})."""
        key = str(x.device)
        if key not in self._on_device:  # (x * scale - mean) / std as one multiply-add
            factor = (1 / self.std * self.scale).to(x.device)
            self._on_device[key] = (factor, (self.mean / self.std).to(x.device))
        factor, shift = self._on_device[key]
        x = x.to(torch.float32) * factor - shift
        if self.task == "classification":
            return x, y.long()
        if self.task == "regression":
            return x, (y.to(torch.float32) - self.target_mean) / self.target_std
        return x, y.to(torch.float32)

    def sample(self, split: str = "train", n: int | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` items of `split` (all when None) as normalised CPU tensors: a seeded random
        draw with `generator`, else the first n (already a seeded random order). At most
        SAMPLE_BYTES of float32 are loaded: a stream is never read whole."""
        items = _split_of(self, split)
        total = len(items)  # type: ignore[arg-type]
        cap = max(1, SAMPLE_BYTES // (4 * math.prod(self.input_shape)))
        size = min(total, cap if n is None else n, cap)
        if size < (total if n is None else min(n, total)):
            log.info("%s: sampling %d of the %d %s items asked for (memory cap)", self.name,
                     size, total if n is None else n, split)
        idx = (torch.randperm(total, generator=generator)[:size] if generator is not None
               else torch.arange(size))
        x = torch.empty((size, *self.input_shape))
        ys, at = [], 0
        for xb, yb in _reader(items, idx.tolist()):
            xb, yb = self.prepare(xb, yb)
            x[at:at + len(xb)] = xb
            ys.append(yb)
            at += len(xb)
        return x, torch.cat(ys)


def loader_workers(items: int, device: torch.device | None = None) -> int:
    """DataLoader workers for `items` items from this process's CPU budget: torch's
    thread count (Ray sets it to the trial's cpus_per_trial) within the CPUs it may run
    on. On the CPU the main process trains too, so it keeps half; tiny data gets none.
    STAGETUNE_LOADER_WORKERS overrides."""
    fixed = get_data_settings().loader_workers
    if fixed is not None:
        return fixed
    if items < TINY:
        return 0
    budget = min(torch.get_num_threads(), len(os.sched_getaffinity(0)))
    if device is None or device.type != "cuda":
        budget //= 2
    return max(1, min(budget, MAX_WORKERS))


def stream_dataset(
    name: str,
    stream: StreamData,
    *,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    classes: Sequence[int] | None = None,
    subset: int | None = None,
    val_subset: int | None = None,
) -> StreamingDataset:
    """Split `stream` by index as `make_dataset` splits arrays (same options, same seeded
    stratified split where labels are known), then take its facts from a sample."""
    check_split(name, val_fraction=val_fraction, split_seed=split_seed, subset=subset,
                val_subset=val_subset)
    if stream.task not in TASKS:
        raise ConfigError(f"{name}: StreamData task must be one of {', '.join(TASKS)} "
                          f"(got {stream.task!r})")
    classification = stream.task == "classification"
    # Index arrays into the factory's datasets, with their labels where those are known.
    train_idx, train_y = np.arange(len(stream.train)), _targets(stream.train)  # type: ignore[arg-type]
    val_base = stream.val if stream.val is not None else stream.train
    val_idx, val_y = np.arange(len(val_base)), _targets(val_base)  # type: ignore[arg-type]
    relabel = None
    if classes is not None:
        if not classification or train_y is None or val_y is None:
            raise ConfigError(f"{name}: 'classes' needs a classification stream whose datasets "
                              "have `targets` (the label of every item)")
        train_idx, train_y = _select_classes(name, train_idx, train_y, classes)
        val_idx, val_y = _select_classes(name, val_idx, val_y, classes)
        relabel = {c: i for i, c in enumerate(classes)}
    if stream.val is None:  # carve validation from train, as make_dataset does
        train_idx, val_idx, train_y, val_y = _carve(name, train_idx, train_y, val_fraction,
                                                    split_seed, classification)
    train_idx, train_y = _cap_idx(train_idx, train_y, subset, split_seed, classification)
    val_idx, _ = _cap_idx(val_idx, val_y, val_subset, split_seed, classification)
    rng = np.random.default_rng(split_seed)  # a random order: the first items are a sample
    order = rng.permutation(len(train_idx))
    train_idx = train_idx[order]
    train_y = None if train_y is None else train_y[order]
    val_idx = val_idx[rng.permutation(len(val_idx))]
    train = _Items(stream.train, train_idx, relabel)
    val = _Items(val_base, val_idx, relabel)
    if len(train) < 2 or len(val) < 1:
        raise ConfigError(f"{name}: the split leaves {len(train)} training and {len(val)} "
                          "validation items; give the stream more items")
    return _with_facts(name, stream, train, val, train_y, relabel, split_seed)


class _Items(TorchDataset[Any]):
    """Items of `base` at `idx`, labels renumbered by `relabel` ('classes')."""

    def __init__(self, base: TorchDataset[Any], idx: np.ndarray,
                 relabel: dict[int, int] | None = None) -> None:
        self.base, self.idx, self.relabel = base, idx, relabel

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        x, y = self.base[int(self.idx[i])]
        if self.relabel is not None:
            y = self.relabel[int(y)]
        return x, y


def _targets(data: TorchDataset[Any]) -> np.ndarray | None:
    """Every item's label without reading the items, where the dataset keeps them."""
    targets = getattr(data, "targets", None)
    if targets is None:
        return None
    return np.asarray(targets.numpy() if isinstance(targets, torch.Tensor) else targets)


def _carve(name: str, idx: np.ndarray, y: np.ndarray | None, val_fraction: float, seed: int,
           classification: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    stratify = y if classification and y is not None else None
    if stratify is not None:
        _check_stratifiable(name, stratify, val_fraction)
    if y is None:
        train, val = train_test_split(idx, test_size=val_fraction, random_state=seed)
        return train, val, None, None
    # The same call as make_dataset's on arrays: the same partition of the same items.
    train, val, y_train, y_val = train_test_split(idx, y, test_size=val_fraction,
                                                  random_state=seed, stratify=stratify)
    return train, val, y_train, y_val


def _cap_idx(idx: np.ndarray, y: np.ndarray | None, size: int | None, seed: int,
             classification: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if y is None:  # no labels known: a plain seeded cut
        capped, _ = _cap(idx, idx, size, seed, False)
        return capped, None
    return _cap(idx, y, size, seed, classification)


def _split_of(data: StreamingDataset, split: str) -> TorchDataset[Any]:
    if split not in ("train", "val"):
        raise ConfigError(f"sample: split must be 'train' or 'val' (got {split!r})")
    return data.train if split == "train" else data.val


def _reader(items: TorchDataset[Any], idx: list[int], batch_size: int = 64) -> DataLoader[Any]:
    """Batches of the items at `idx`, in that order, decoded by worker processes."""
    from torch.utils.data import Subset

    return DataLoader(Subset(items, idx), batch_size=batch_size,
                      num_workers=loader_workers(len(idx)),
                      generator=torch.Generator().manual_seed(0))  # leaves torch's RNG alone


def _with_facts(name: str, stream: StreamData, train: _Items, val: _Items,
                train_y: np.ndarray | None, relabel: dict[int, int] | None,
                seed: int) -> StreamingDataset:
    """Input shape, normalisation and label facts from up to STATS_ITEMS training items."""
    item = train[0]
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise ConfigError(f"{name}: StreamData items must be (x, y) pairs (got "
                          f"{type(item).__name__})")
    x0 = item[0]
    if not isinstance(x0, (torch.Tensor, np.ndarray)):
        raise ConfigError(f"{name}: StreamData items must be (x, y) with x a tensor or array "
                          f"(got x of type {type(x0).__name__})")
    shape = tuple(x0.shape)
    if stream.is_image and len(shape) != 3:
        raise ConfigError(f"{name}: StreamData with is_image=True needs (C, H, W) items "
                          f"(got shape {shape})")
    scale = 1 / 255 if x0.dtype in (torch.uint8, np.uint8) else 1.0
    n = min(STATS_ITEMS, len(train))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    dims = [0, *range(2, len(shape) + 1)] if stream.is_image else [0]
    # Sums in float64, batch by batch: one statistic per channel (images) or per feature.
    stat_shape = (shape[0], *[1] * (len(shape) - 1)) if stream.is_image else shape
    total = torch.zeros(stat_shape, dtype=torch.float64)
    sq = torch.zeros(stat_shape, dtype=torch.float64)
    labels = []
    for xb, yb in _reader(train, idx.tolist()):
        xb = xb.to(torch.float64) * scale
        if tuple(xb.shape[1:]) != shape:
            raise ConfigError(f"{name}: StreamData items must all have one shape; found "
                              f"{shape} and {tuple(xb.shape[1:])} (resize them)")
        total += xb.sum(dim=dims, keepdim=True)[0]
        sq += (xb * xb).sum(dim=dims, keepdim=True)[0]
        labels.append(yb)
    count = n * (math.prod(shape[1:]) if stream.is_image else 1)
    mean = total / count
    var = (sq / count - mean * mean).clamp_min(0) * count / max(count - 1, 1)
    facts = _label_facts(name, stream, torch.cat(labels), train_y, relabel)
    return StreamingDataset(name, train, val, stream.task, input_shape=shape, scale=scale,
                            mean=mean.float(), std=var.sqrt().float().clamp_min(1e-6),
                            is_image=stream.is_image, **facts)


def _label_facts(name: str, stream: StreamData, y: torch.Tensor, train_y: np.ndarray | None,
                 relabel: dict[int, int] | None) -> dict[str, Any]:
    if stream.task == "regression":
        y = y.double()
        mean, std = float(y.mean()), max(float(y.std()), 1e-6) if len(y) > 1 else 1.0
        return {"num_classes": 1, "label_prior": (), "target_mean": mean, "target_std": std,
                "y_train": ((y - mean) / std).float()}
    if stream.task == "multilabel":
        labels = stream.num_labels or stream.num_classes
        if y.dim() != 2 or (labels is not None and y.shape[1] != labels):
            raise ConfigError(f"{name}: multilabel StreamData needs y as a vector of "
                              f"num_labels {{0, 1}} values (got y of shape {tuple(y.shape[1:])})")
        return {"num_classes": int(y.shape[1]), "y_train": y.float(),
                "label_prior": tuple(y.double().mean(dim=0).tolist())}
    classes = stream.num_classes
    if relabel is not None:
        classes = len(relabel)
    elif classes is None and train_y is not None:
        classes = int(train_y.max()) + 1
    if classes is None or classes < 2:
        raise ConfigError(f"{name}: classification StreamData needs num_classes >= 2, or a "
                          f"train dataset with `targets` (got num_classes={classes})")
    # Every label when the dataset keeps them; else the sample's.
    known = torch.as_tensor(train_y) if train_y is not None else y.long()
    if int(known.min()) < 0 or int(known.max()) >= classes:
        raise ConfigError(f"{name}: labels must lie in 0..{classes - 1} (num_classes "
                          f"{classes}); found {int(known.min())}..{int(known.max())}")
    prior = torch.bincount(known, minlength=classes).double() / len(known)
    return {"num_classes": classes, "label_prior": tuple(prior.tolist()), "y_train": y.long()}


AnyDataset = Dataset | StreamingDataset
"""What `load_dataset` returns: whole tensors (the fast path) or a stream."""
