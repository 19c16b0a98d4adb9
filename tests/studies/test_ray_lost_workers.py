"""A worker lost before its trial began, on a real local Ray whose workers load
tests/studies/fault_plugin.py, which kills the first trial worker that loads it: the trial's
retry counts as a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from optuna.trial import TrialState

from stagetune.studies.run.cluster import NAMESPACE
from stagetune.studies.run.runner_actor import start_runner, stop_runner
from tests.studies.ray_support import digits_spec, finish, submit, trials

pytestmark = pytest.mark.slow  # a Ray of its own whose first trial worker dies

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 2-CPU local Ray whose workers load the fault plugin; the first trial worker to
    load it dies (and writes the file this yields)."""
    path = tmp_path_factory.mktemp("faults") / "died"
    patch = pytest.MonkeyPatch()
    patch.setenv("STAGETUNE_PLUGINS", "tests.studies.fault_plugin")
    patch.setenv("STAGETUNE_PLUGINS_DIR", str(ROOT))
    patch.setenv("FAULT_PLUGIN_DIE_ONCE", str(path))
    ray.shutdown()  # the process's shared Ray (conftest's ray_local), if up: this needs its own
    ray.init(address="local", num_cpus=2, namespace=NAMESPACE, include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield path
    ray.shutdown()
    patch.undo()


def test_a_trial_whose_worker_died_before_it_began_counts_the_restart(marker: Path,
                                                                      tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    off = {"enabled": False}
    spec = digits_spec("early-death", resources={"max_concurrent": 1, "max_retries": 2},
                       stages={"data_check": off, "baseline": off, "init_check": off,
                               "overfit": off, "lr_probe": off,
                               "coarse": {"trials": 1, "epochs": 1}, "refine": off,
                               "confirm": off})
    spec["task"]["objective"] = "val_accuracy"
    submit(store_url, spec)
    actor = start_runner("early-death", store_url)
    report = finish(actor, 300)
    stop_runner(actor)
    assert marker.exists()  # a trial's worker did die while it loaded the plugins
    assert report["status"] == "completed", report["message"]
    (trial,) = trials(store_url, "early-death", "coarse")
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["restarts"] == 1
