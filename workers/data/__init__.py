"""Dataset registry: `register_dataset` to add one, `load_dataset` to get a cached split."""

from workers.data import _tabular, _vision  # noqa: F401  (fill the registry)
from workers.data._base import Dataset, RawData, TaskKind
from workers.data._registry import (
    DATASETS,
    SPLIT_OPTIONS,
    dataset_loaded,
    load_dataset,
    register_dataset,
)
from workers.data._settings import DataSettings, get_data_settings

__all__ = [
    "DATASETS",
    "SPLIT_OPTIONS",
    "DataSettings",
    "Dataset",
    "RawData",
    "TaskKind",
    "dataset_loaded",
    "get_data_settings",
    "load_dataset",
    "register_dataset",
]
