"""A trial that Ray reports killed for lack of memory (`ray.exceptions.OutOfMemoryError`,
raised in the trial's own Ray task by tests/studies/fault_plugin.py, as Ray raises it for a
task its memory monitor killed) is failed with a sentence that says so and what to do,
not with Ray's wrapping; the study goes on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from stagetune.studies.run.cluster import NAMESPACE
from stagetune.studies.run.executor import Job
from stagetune.studies.run.ray_executor import RayExecutor
from stagetune.studies.run.ray_faults import memory_sentence
from stagetune.studies.spec import Resources
from stagetune.workers import Task, TrialRequest

pytestmark = pytest.mark.slow  # a Ray of its own whose trial workers run out of memory

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def ray_out_of_memory() -> Iterator[None]:
    """A 2-CPU local Ray whose trial workers fail with Ray's OutOfMemoryError."""
    patch = pytest.MonkeyPatch()
    patch.setenv("STAGETUNE_PLUGINS", "tests.studies.fault_plugin")
    patch.setenv("STAGETUNE_PLUGINS_DIR", str(ROOT))
    patch.setenv("FAULT_PLUGIN_OUT_OF_MEMORY", "1")
    ray.shutdown()  # the process's shared Ray (conftest's ray_local), if up: this needs its own
    ray.init(address="local", num_cpus=2, namespace=NAMESPACE, include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()
    patch.undo()


def test_a_trial_killed_for_memory_is_failed_with_that_reason(ray_out_of_memory: None) -> None:
    executor = RayExecutor(Resources(max_concurrent=1, max_retries=1))
    jobs = [Job(n, TrialRequest(Task("digits", "mlp"), epochs=1)) for n in range(2)]
    outcomes = list(executor.run(jobs))
    assert [o.job.key for o in outcomes] == [0, 1]  # one failed trial does not stop the next
    for outcome in outcomes:
        assert outcome.result is None
        assert outcome.error == memory_sentence("its worker")
    assert outcomes[0].error.startswith(
        "its worker was killed because its node ran out of memory (Ray's memory monitor); give "
        "each trial less to hold (a smaller batch_size or model), run fewer at once")
