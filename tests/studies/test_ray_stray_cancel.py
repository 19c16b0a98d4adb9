"""A trial interrupted by a cancel its own study never sent (Ray delivers a cancel as an
interrupt to the worker process, and one meant for another study's trial can land in the
task that reused that worker) starts again, and its study never sees it as cancelled."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from stagetune.studies.run.cluster import NAMESPACE
from stagetune.studies.run.executor import Job
from stagetune.studies.run.ray_executor import RayExecutor
from stagetune.studies.spec import Resources
from stagetune.workers import Task, TrialRequest

pytestmark = pytest.mark.slow  # a Ray of its own, whose first trial is interrupted

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def ray_interrupting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A 2-CPU local Ray whose first trial is interrupted as a cancel would interrupt it."""
    patch = pytest.MonkeyPatch()
    patch.setenv("STAGETUNE_PLUGINS", "tests.studies.fault_plugin")
    patch.setenv("STAGETUNE_PLUGINS_DIR", str(ROOT))
    patch.setenv("FAULT_PLUGIN_INTERRUPT_ONCE",
                 str(tmp_path_factory.mktemp("stray") / "interrupted"))
    ray.shutdown()  # the process's shared Ray (conftest's ray_local), if up: this needs its own
    ray.init(address="local", num_cpus=2, namespace=NAMESPACE, include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()
    patch.undo()


def test_a_trial_interrupted_by_a_cancel_it_was_not_sent_runs_again(ray_interrupting: None
                                                                      ) -> None:
    executor = RayExecutor(Resources(max_concurrent=1, max_retries=0))
    (outcome,) = executor.run([Job(0, TrialRequest(Task("digits", "mlp"), epochs=1))])
    assert outcome.error == "" and not outcome.cancelled
    assert outcome.result is not None and outcome.result.status == "completed"
    assert outcome.restarts == 1
