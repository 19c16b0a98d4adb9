"""What runs on a GPU: datasets, models, the training loop, the probes, and `execute`.

Imports no Optuna, SQL, FastAPI or Ray: a worker gets a request and returns data.
Importing the package imports no torch: `execute`, `Report` and `Save` load the training
code on first use, so a runner or a client can build requests and read results without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stagetune.workers.errors import ConfigError, DataNotFoundError, StagetuneError
from stagetune.workers.request import Metrics, Task, TrialRequest, TrialResult

if TYPE_CHECKING:
    from stagetune.workers.execute import execute
    from stagetune.workers.train import Report, Save

__all__ = ["ConfigError", "DataNotFoundError", "Metrics", "Report", "Save", "StagetuneError",
           "Task", "TrialRequest", "TrialResult", "execute"]


def __getattr__(name: str) -> Any:
    if name == "execute":
        from stagetune.workers.execute import execute as function

        # importing the submodule bound `workers.execute` to it; the package's name is the
        # function (nothing else imports the submodule by its path)
        globals()["execute"] = function
        return function
    if name in ("Report", "Save"):
        from stagetune.workers import train

        return getattr(train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
