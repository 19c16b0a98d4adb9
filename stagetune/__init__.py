"""stagetune: staged hyperparameter search for PyTorch, as a service.

The public surface: the client that submits and watches studies, the spec, the decorators
that register your own datasets, models, losses, metrics, augmentations and trainers, and
the errors.
Names are imported on first use (as Optuna's `__init__` does), so `import stagetune` loads
no torch, Ray or database driver: a client script pays only for what it touches.

The code lives in the repository's `service/`, `studies/` and `workers/` folders; this
package reaches them as `stagetune.service`, `stagetune.studies` and `stagetune.workers`
through relative symlinks, so that every import resolves for mypy, IDEs and readers as
plain files (docs/architecture/package.md).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stagetune.service.client import ApiError, Client
    from stagetune.studies.errors import SpecError
    from stagetune.studies.spec import StudySpec, load_spec
    from stagetune.workers.augment import register_augmentation
    from stagetune.workers.data import register_dataset
    from stagetune.workers.errors import ConfigError, StagetuneError
    from stagetune.workers.losses import register_loss
    from stagetune.workers.metrics import register_metric
    from stagetune.workers.models import register_model
    from stagetune.workers.trainers import register_command, register_trainer

try:
    __version__ = version("stagetune")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0.0.0+unknown"

# public name -> the module that defines it
_LAZY = {
    "Client": "stagetune.service.client",
    "ApiError": "stagetune.service.client",
    "StudySpec": "stagetune.studies.spec",
    "load_spec": "stagetune.studies.spec",
    "SpecError": "stagetune.studies.errors",
    "StagetuneError": "stagetune.workers.errors",
    "ConfigError": "stagetune.workers.errors",
    "register_augmentation": "stagetune.workers.augment",
    "register_dataset": "stagetune.workers.data",
    "register_model": "stagetune.workers.models",
    "register_loss": "stagetune.workers.losses",
    "register_metric": "stagetune.workers.metrics",
    "register_trainer": "stagetune.workers.trainers",
    "register_command": "stagetune.workers.trainers",
}

__all__ = ["ApiError", "Client", "ConfigError", "SpecError", "StagetuneError", "StudySpec",
           "__version__", "load_spec", "register_augmentation", "register_command",
           "register_dataset", "register_loss",
           "register_metric", "register_model", "register_trainer"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'stagetune' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
