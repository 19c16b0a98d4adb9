"""Where datasets live and whether they may be downloaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stagetune.workers.errors import ConfigError
from stagetune.workers.settings import Settings, get_settings

# The data settings are the process's one Settings (workers/settings.py): STAGETUNE_DATA_DIR,
# STAGETUNE_ALLOW_DOWNLOAD, STAGETUNE_FASHION_MNIST_SYSTEM_DIR, STAGETUNE_LOADER_WORKERS.
# The old names stay for plugins and tests that use them.
DataSettings = Settings
get_data_settings = get_settings


def data_file(path: str, what: str = "file", settings: Settings | None = None) -> Path:
    """`path` (relative to the data folder, or absolute) as a file inside the data folder,
    symlinks resolved. Outside it or absent, the same ConfigError: which files exist
    elsewhere on the server is none of a client's business."""
    return _inside_data(path, what, "file", Path.is_file, settings)


def data_folder(path: str, what: str = "folder", settings: Settings | None = None) -> Path:
    """`path` (relative to the data folder) as a folder inside the data folder, symlinks
    resolved. Outside it or absent, the same ConfigError, as for `data_file`."""
    return _inside_data(path, what, "folder", Path.is_dir, settings)


def _inside_data(path: str, what: str, kind: str, is_kind: Callable[[Path], bool],
                 settings: Settings | None) -> Path:
    root = (settings or get_data_settings()).data_dir.resolve()
    try:
        found_path = (root / Path(path).expanduser()).resolve()
        found = bool(path) and found_path.is_relative_to(root) and is_kind(found_path)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        found = False
    if not found:
        shown = path if len(path) <= 200 else path[:197] + "..."
        raise ConfigError(f"{what}: no {kind} {shown!r} in the data folder; give the path of a "
                          f"{kind} inside the data folder (STAGETUNE_DATA_DIR), relative to it")
    return found_path
