"""The dataset registry and the cached loader every caller goes through."""

from __future__ import annotations

import functools
import inspect
import json
import threading
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from stagetune.workers.config import describe_validation_error
from stagetune.workers.data._base import Dataset, RawData
from stagetune.workers.data._settings import DataSettings, get_data_settings
from stagetune.workers.data._split import check_split, make_dataset
from stagetune.workers.data._stream import StreamData, StreamingDataset, stream_dataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.registry import Registry

DatasetFactory = Callable[..., RawData | StreamData]

DATASETS: Registry[DatasetFactory] = Registry("dataset")


def register_dataset(name: str, *, knobs: type[BaseModel] | None = None,
                     loss: str | Callable[..., Any] | None = None, metrics: Sequence[str] = (),
                     expected_loss: Callable[[Dataset], float] | None = None,
                     **info: Any) -> Callable[[DatasetFactory], DatasetFactory]:
    """Decorate a factory returning RawData to register it as dataset `name`.

    `knobs` (a pydantic model) are its options; `loss` the loss it trains with, a
    registered name or a callable `(out, y) -> scalar tensor` (registered as loss `name`);
    `metrics` the registered metrics reported for it (the first is the default objective);
    `expected_loss(data)` what the loss is for a model that knows nothing, where the loss's
    own rule does not fit; `check(settings, **options)` what is wrong with options whose
    types are right, found cheaply without loading (a folder that is missing), as (option,
    message) pairs. All of it is kept in the entry's info, so a spec can be checked
    without loading the data.
    """
    from stagetune.workers.losses import register_loss  # the losses import torch

    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if loss is not None and not isinstance(loss, str) and not callable(loss):
        raise ConfigError(f"dataset '{name}': loss must be a registered loss's name or a "
                          f"function (out, y) -> loss (got {loss!r})")
    if not all(isinstance(m, str) for m in metrics):
        raise ConfigError(f"dataset '{name}': metrics must be registered metrics' names "
                          f"(got {list(metrics)!r})")
    if expected_loss is not None and not callable(expected_loss):
        raise ConfigError(f"dataset '{name}': expected_loss must be a function of the "
                          f"dataset returning a float (got {expected_loss!r})")
    register = DATASETS.register(name, knobs=knobs, loss=name if callable(loss) else loss,
                                 metrics=metrics, expected_loss=expected_loss, **info)

    def decorator(factory: DatasetFactory) -> DatasetFactory:
        register(factory)  # first: a duplicate dataset name leaves no loss behind
        if callable(loss):
            register_loss(name)(loss)
        return factory

    return decorator


# Options every dataset takes; the rest go to the factory as keyword arguments.
SPLIT_OPTIONS = ("val_fraction", "split_seed", "classes", "subset", "val_subset")

_cache: dict[str, Dataset | StreamingDataset] = {}
_lock = threading.Lock()


def _key(name: str, options: Mapping[str, Any], settings: DataSettings) -> str:
    return json.dumps([name, dict(options), str(settings.data_dir)], sort_keys=True, default=str)


def dataset_loaded(name: str, options: Mapping[str, Any] | None = None) -> bool:
    """Whether this process already holds `name` with `options` in memory."""
    return _key(name, options or {}, get_data_settings()) in _cache


def load_dataset(
    name: str, options: Mapping[str, Any] | None = None, settings: DataSettings | None = None
) -> Dataset | StreamingDataset:
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
) -> Dataset | StreamingDataset:
    check_options(name, options)
    problems = option_problems(name, options, settings)
    if problems:
        raise ConfigError("; ".join(f"dataset '{name}': {o}: {m}" for o, m in problems))
    split = {k: options.pop(k) for k in SPLIT_OPTIONS if k in options}
    raw = factory(settings=settings, **options)
    if isinstance(raw, StreamData):  # split by index; facts from a sample of items
        return stream_dataset(name, raw, **split)
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


def option_problems(name: str, options: Mapping[str, Any], settings: DataSettings | None = None
                    ) -> list[tuple[str, str]]:
    """What the dataset's own `check` finds wrong with `options` (their types already
    checked), as (option, message); a submitted spec gets them, each with its field."""
    check = DATASETS.entry(name).info.get("check")
    if check is None:
        return []
    return list(check(settings or get_data_settings(), **options))


def dataset_options_model(name: str) -> type[BaseModel] | None:
    """The pydantic model of `name`'s options (None: its factory takes **kwargs)."""
    return _options_model(name)


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
