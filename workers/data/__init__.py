"""Dataset registry: `register_dataset` to add one, `load_dataset` to get a cached split.

The settings import alone; the registry and the datasets (torch, torchvision, scikit-learn)
load on first use of any other name, so a runner that only needs the data folder stays
small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stagetune.workers.data._settings import DataSettings, data_file, data_folder, get_data_settings

if TYPE_CHECKING:
    from stagetune.workers.data._base import Dataset, RawData, TaskKind
    from stagetune.workers.data._registry import (
        DATASETS,
        SPLIT_OPTIONS,
        check_options,
        dataset_loaded,
        dataset_options_model,
        load_dataset,
        option_problems,
        register_dataset,
    )
    from stagetune.workers.data._stream import AnyDataset, StreamData, StreamingDataset, loader_workers

__all__ = [
    "AnyDataset",
    "DATASETS",
    "SPLIT_OPTIONS",
    "DataSettings",
    "Dataset",
    "RawData",
    "StreamData",
    "StreamingDataset",
    "TaskKind",
    "check_options",
    "data_file",
    "data_folder",
    "dataset_loaded",
    "dataset_options_model",
    "get_data_settings",
    "loader_workers",
    "load_dataset",
    "option_problems",
    "register_dataset",
]

_BASE = ("Dataset", "RawData", "TaskKind")
_STREAM = ("AnyDataset", "StreamData", "StreamingDataset", "loader_workers")
_REGISTRY = ("DATASETS", "SPLIT_OPTIONS", "check_options", "dataset_loaded",
             "dataset_options_model", "load_dataset", "option_problems", "register_dataset")


def __getattr__(name: str) -> Any:
    if name in _BASE or name in _REGISTRY or name in _STREAM:
        from stagetune.workers.data import _base, _registry, _stream, _tabular, _vision  # noqa: F401  (fill the registry)

        module = _base if name in _BASE else _stream if name in _STREAM else _registry
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
