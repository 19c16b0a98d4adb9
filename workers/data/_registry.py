"""The dataset registry and the cached loader every caller goes through."""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from workers.data._base import Dataset, RawData
from workers.data._settings import DataSettings, get_data_settings
from workers.data._split import make_dataset
from workers.errors import ConfigError
from workers.registry import Registry

DatasetFactory = Callable[..., RawData]

DATASETS: Registry[DatasetFactory] = Registry("dataset")
register_dataset = DATASETS.register

# Options every dataset takes; the rest go to the factory as keyword arguments.
SPLIT_OPTIONS = ("val_fraction", "split_seed", "classes", "subset", "val_subset")

_cache: dict[str, Dataset] = {}
_lock = threading.Lock()


def _key(name: str, options: Mapping[str, Any], settings: DataSettings) -> str:
    return json.dumps([name, dict(options), str(settings.data_dir)], sort_keys=True, default=str)


def dataset_loaded(name: str, options: Mapping[str, Any] | None = None) -> bool:
    """Whether this process already holds `name` with `options` in memory."""
    return _key(name, options or {}, get_data_settings()) in _cache


def load_dataset(
    name: str, options: Mapping[str, Any] | None = None, settings: DataSettings | None = None
) -> Dataset:
    """Load `name` with `options`, once per process: later calls return the cached split."""
    factory = DATASETS.get(name)
    options = dict(options or {})
    settings = settings or get_data_settings()
    key = _key(name, options, settings)
    with _lock:
        if key not in _cache:
            _cache[key] = _load(name, factory, options, settings)
        return _cache[key]


def _load(
    name: str, factory: DatasetFactory, options: dict[str, Any], settings: DataSettings
) -> Dataset:
    split = {k: options.pop(k) for k in SPLIT_OPTIONS if k in options}
    accepted = [p for p in inspect.signature(factory).parameters if p != "settings"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"dataset '{name}' has no option {', '.join(repr(u) for u in unknown)}; "
            f"allowed: {', '.join(sorted([*accepted, *SPLIT_OPTIONS]))}"
        )
    raw = factory(settings=settings, **options)
    return make_dataset(name, raw, **split)
