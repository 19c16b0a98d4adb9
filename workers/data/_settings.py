"""Where datasets live and whether they may be downloaded."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.errors import ConfigError


class DataSettings(BaseSettings):
    """Read from STAGETUNE_DATA_DIR and STAGETUNE_ALLOW_DOWNLOAD."""

    model_config = SettingsConfigDict(env_prefix="STAGETUNE_", extra="ignore")

    data_dir: Path = Path("data")
    allow_download: bool = False
    fashion_mnist_system_dir: Path = Path("/usr/share/datasets/fashion-mnist")
    # DataLoader worker processes per streamed run; None: from the trial's CPU budget.
    loader_workers: int | None = Field(None, ge=0, le=64)


@lru_cache
def get_data_settings() -> DataSettings:
    return DataSettings()


def data_file(path: str, what: str = "file", settings: DataSettings | None = None) -> Path:
    """`path` (relative to the data folder, or absolute) as a file inside the data folder,
    symlinks resolved. Outside it or absent, the same ConfigError: which files exist
    elsewhere on the server is none of a client's business."""
    root = (settings or get_data_settings()).data_dir.resolve()
    try:
        file = (root / Path(path).expanduser()).resolve()
        found = file.is_relative_to(root) and file.is_file()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        found = False
    if not found:
        shown = path if len(path) <= 200 else path[:197] + "..."
        raise ConfigError(f"{what}: no file {shown!r} in the data folder; give the path of a "
                          "file inside the data folder (STAGETUNE_DATA_DIR), relative to it")
    return file
