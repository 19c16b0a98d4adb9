"""User plugins: modules that register models, datasets, trainers, losses and metrics.

A plugin is found two ways: its module is named in STAGETUNE_PLUGINS, or an installed
distribution declares it as an entry point of the group `stagetune.plugins` (so that
`pip install my-plugin` is enough). Every process that builds or validates requests
imports them (the CLI, the service, the runner and each Ray worker), so a request only
ever names registered things.
"""

from __future__ import annotations

import importlib
import sys
from functools import lru_cache
from importlib.metadata import entry_points

from stagetune.workers.errors import ConfigError
from stagetune.workers.settings import Settings

# STAGETUNE_PLUGINS (comma-separated module names) and STAGETUNE_PLUGINS_DIR (a folder put on
# the import path first; the compose file mounts one) are fields of the one Settings.
PluginSettings = Settings


ENTRY_POINT_GROUP = "stagetune.plugins"


@lru_cache
def load_plugins() -> tuple[str, ...]:
    """Import every plugin module once per process, those of STAGETUNE_PLUGINS first; a
    missing one is a ConfigError that says where it was named."""
    settings = Settings()  # read afresh: this function's own cache makes it once a process
    if settings.plugins_dir is not None and str(settings.plugins_dir) not in sys.path:
        sys.path.insert(0, str(settings.plugins_dir))
    for module in settings.modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"STAGETUNE_PLUGINS names '{module}', which cannot be imported "
                              f"({exc}); check the name and STAGETUNE_PLUGINS_DIR") from None
    found = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except ImportError as exc:
            owner = point.dist.name if point.dist is not None else "an installed package"
            raise ConfigError(f"{owner} declares the stagetune plugin '{point.value}', which "
                              f"cannot be imported ({exc}); reinstall or uninstall it") from None
        found.append(point.value.split(":")[0])
    return tuple(dict.fromkeys([*settings.modules, *found]))
