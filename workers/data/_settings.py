"""Where datasets live and whether they may be downloaded."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class DataSettings(BaseSettings):
    """Read from STAGETUNE_DATA_DIR and STAGETUNE_ALLOW_DOWNLOAD."""

    model_config = SettingsConfigDict(env_prefix="STAGETUNE_", extra="ignore")

    data_dir: Path = Path("data")
    allow_download: bool = False
    fashion_mnist_system_dir: Path = Path("/usr/share/datasets/fashion-mnist")


@lru_cache
def get_data_settings() -> DataSettings:
    return DataSettings()
