"""User plugins: modules named in STAGETUNE_PLUGINS that register models and datasets.

Every process that builds or validates requests imports them (the CLI, the service,
the runner and each Ray worker), so a request only ever names registered things.
"""

from __future__ import annotations

import importlib
import sys
from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.errors import ConfigError


class PluginSettings(BaseSettings):
    """STAGETUNE_PLUGINS: comma-separated module names; STAGETUNE_PLUGINS_DIR: a folder
    put on the import path first (the compose file mounts one)."""

    model_config = SettingsConfigDict(env_prefix="STAGETUNE_", extra="ignore")

    plugins: str = ""
    plugins_dir: Path | None = None

    @property
    def modules(self) -> list[str]:
        return [m.strip() for m in self.plugins.split(",") if m.strip()]


@lru_cache
def load_plugins() -> tuple[str, ...]:
    """Import every plugin module once per process; a missing one is a ConfigError."""
    settings = PluginSettings()
    if settings.plugins_dir is not None and str(settings.plugins_dir) not in sys.path:
        sys.path.insert(0, str(settings.plugins_dir))
    for module in settings.modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"STAGETUNE_PLUGINS names '{module}', which cannot be imported "
                              f"({exc}); check the name and STAGETUNE_PLUGINS_DIR") from None
    return tuple(settings.modules)
