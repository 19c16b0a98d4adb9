"""A real local Ray that offers a GPU on a machine where torch cannot use one (no NVIDIA
driver here): trials that ask for GPUs fail with the check's sentence before they train,
whatever trains them (the built-in loop, a user's function, a command), and a study on
such a cluster ends with that failure reported instead of training on the CPU."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
from optuna.trial import TrialState

from stagetune.studies.run.cluster import NAMESPACE
from stagetune.studies.run.executor import Job
from stagetune.studies.run.ray_executor import RayExecutor
from stagetune.studies.run.runner_actor import start_runner, stop_runner
from stagetune.studies.spec import Resources
from stagetune.workers import Task, TrialRequest
from tests.studies.ray_support import NO_PROBES, digits_spec, finish, submit, trials

pytestmark = [pytest.mark.skipif(torch.cuda.is_available(),
                                 reason="torch can use CUDA here: the check lets trials train"),
              pytest.mark.slow]  # slow: a Ray of its own claiming a GPU; whole studies

# the check's sentence, in the words the person reading it acts on
KEY_WORDS = ("Ray gave this trial GPU 0 on host", "but torch cannot use CUDA there",
             "no NVIDIA driver was found", "stopped before training rather than run on the CPU",
             "NVIDIA Container Toolkit", "--gpus all",
             "or set resources.gpus_per_trial to 0 to train on CPUs.")


@pytest.fixture(scope="module")
def ray_claiming_a_gpu() -> Iterator[None]:
    """A 2-CPU local Ray that says it has one GPU; its workers know the test plugin's
    trainers (they inherit this environment), so those would train if let through."""
    root = str(Path(__file__).parents[2])
    patch = pytest.MonkeyPatch()
    patch.setenv("STAGETUNE_PLUGINS", "tests.workers.trainer_plugin")
    patch.setenv("STAGETUNE_PLUGINS_DIR", root)
    ray.shutdown()  # the process's shared Ray (conftest's ray_local), if up: this needs its own
    ray.init(address="local", num_cpus=2, num_gpus=1, namespace=NAMESPACE,
             include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": root}})
    yield
    ray.shutdown()
    patch.undo()


def gpu_spec(name: str, gpus: float, stages: dict[str, Any]) -> dict[str, Any]:
    # one trial at a time: the worker process the first test warmed (torch imported) runs them
    spec = digits_spec(name, resources={"gpus_per_trial": gpus, "max_concurrent": 1},
                       stages=stages)
    spec["task"]["objective"] = "val_accuracy"  # no worker needed to find its direction
    return spec


def assert_the_sentence(message: str) -> None:
    for words in KEY_WORDS:
        assert words in message, f"{words!r} is not in: {message}"
    assert socket.gethostname() in message, message


def test_trials_given_a_gpu_torch_cannot_use_fail_before_training(
        ray_claiming_a_gpu: None) -> None:
    epochs: list[tuple[str, int]] = []

    def job(name: str, task: Task) -> Job:
        def report(epoch: int, _: object) -> bool:
            epochs.append((name, epoch))
            return False

        return Job(name, TrialRequest(task, epochs=2), report=report)

    # one at a time: one worker process, which imports torch once, meets all three
    executor = RayExecutor(Resources(gpus_per_trial=0.25, max_concurrent=1, max_retries=0))
    outcomes = list(executor.run([
        job("built-in loop", Task("digits", "mlp")),
        job("user function", Task(None, None, trainer="own_loop_unprobed")),
        job("command", Task(None, None, trainer="script")),
    ]))

    assert sorted(o.job.key for o in outcomes) == ["built-in loop", "command", "user function"]
    for outcome in outcomes:
        assert outcome.result is None, (outcome.job.key, outcome.result)
        assert_the_sentence(outcome.error)
    assert epochs == []  # not one epoch trained, on any device
    print(f"\n{outcomes[0].job.key}: {outcomes[0].error}")


def test_a_study_with_gpus_per_trial_ends_with_the_failure(ray_claiming_a_gpu: None,
                                                           tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    started = time.monotonic()
    # probes off, so that the coarse trials themselves meet the GPU (the data check, the
    # first stage, would stop the study with the same sentence before them)
    submit(url, gpu_spec("gpu-less", 0.25, {**NO_PROBES, "data_check": {"enabled": False},
                                           "init_check": {"enabled": False},
                                           "coarse": {"trials": 3, "epochs": 1},
                                           "refine": {"enabled": False},
                                           "confirm": {"enabled": False}}))
    actor = start_runner("gpu-less", url)
    report = finish(actor, timeout=120)  # a study that hangs fails here, saying where it stood
    stop_runner(actor)

    assert report["status"] in ("stopped", "failed"), report  # coarse, a gate, failed
    coarse = trials(url, "gpu-less", "coarse")
    assert [t.state for t in coarse] == [TrialState.FAIL] * 3, report
    for trial in coarse:
        assert trial.user_attrs["status"] == "failed"
        assert_the_sentence(trial.user_attrs["message"])
        assert "worker" not in trial.user_attrs  # it never started training anywhere
    print(f"\nstudy ended {report['status']} in {time.monotonic() - started:.0f} s: "
          f"{report['message']}\ntrial 0: {coarse[0].user_attrs['message']}")


def test_the_data_check_stops_a_default_study_with_the_sentence(ray_claiming_a_gpu: None,
                                                                tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    submit(url, gpu_spec("gpu-less-default", 1, {"coarse": {"trials": 2, "epochs": 1}}))
    actor = start_runner("gpu-less-default", url)
    report = finish(actor, timeout=120)
    stop_runner(actor)

    assert report["status"] == "failed", report
    assert report["message"].startswith("data_check: Ray gave this trial GPU 0 on host"), report
    assert_the_sentence(report["message"])
    assert trials(url, "gpu-less-default", "coarse") == []
    print(f"\nstudy failed: {report['message']}")
