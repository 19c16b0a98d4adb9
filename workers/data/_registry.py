"""The dataset registry and the cached loader every caller goes through."""

from __future__ import annotations

import functools
import inspect
import json
import threading
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from workers.config import describe_validation_error
from workers.data._base import Dataset, RawData
from workers.data._settings import DataSettings, get_data_settings
from workers.data._split import check_split, make_dataset
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
    check_options(name, options)
    split = {k: options.pop(k) for k in SPLIT_OPTIONS if k in options}
    raw = factory(settings=settings, **options)
    return make_dataset(name, raw, **split)


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """What loading `name` would say of its options' names and types, without loading it:
    a ConfigError naming the option and what is allowed."""
    model = _options_model(name)
    if model is None:  # the factory takes **kwargs: anything goes
        return
    unknown = sorted(set(options) - set(model.model_fields))
    if unknown:
        raise ConfigError(
            f"dataset '{name}' has no option {', '.join(repr(u) for u in unknown)}; "
            f"allowed: {', '.join(sorted(model.model_fields))}"
        )
    try:
        checked = model.model_validate(dict(options))
    except ValidationError as exc:
        raise ConfigError(f"dataset '{name}': {describe_validation_error(exc)}") from None
    check_split(name, **{k: getattr(checked, k) for k in SPLIT_OPTIONS if k != "classes"})


@functools.cache
def _options_model(name: str) -> type[BaseModel] | None:
    """A strict pydantic model of `name`'s options: its factory's keyword parameters
    (their annotations and defaults), or its declared knobs, and the split options every
    dataset takes."""
    entry = DATASETS.entry(name)
    factory = entry.factory
    fields: dict[str, Any] = {"val_fraction": (float, 0.2), "split_seed": (int, 0),
                              "classes": (list[int] | None, None), "subset": (int | None, None),
                              "val_subset": (int | None, None)}
    if entry.knobs is not None:  # declared: the knobs are the options
        for field, info in entry.knobs.model_fields.items():
            fields[field] = (info.annotation, info)
        return create_model(f"{name}_options", __config__=ConfigDict(extra="forbid"), **fields)
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # a plugin's annotation that does not resolve: check names only
        hints = {}
    for param in inspect.signature(factory).parameters.values():
        if param.kind is param.VAR_KEYWORD:
            return None
        if param.name != "settings" and param.kind is not param.VAR_POSITIONAL:
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (hints.get(param.name, Any), default)
    return create_model(f"{name}_options", __config__=ConfigDict(extra="forbid", strict=True),
                        **fields)
