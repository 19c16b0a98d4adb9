"""What runs on a GPU: datasets, models, the training loop, the probes, and `execute`.

Imports no Optuna, SQL, FastAPI or Ray: a worker gets a request and returns data.
"""

from workers.errors import ConfigError, DataNotFoundError, StagetuneError
from workers.execute import execute
from workers.request import Metrics, Task, TrialRequest, TrialResult
from workers.train import Report, Save

__all__ = ["ConfigError", "DataNotFoundError", "Metrics", "Report", "Save", "StagetuneError",
           "Task", "TrialRequest", "TrialResult", "execute"]
