"""Staged studies of a user's own training function, in process (LocalExecutor)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from stagetune.studies.run.runner import Runner, objective_of
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store
from tests.workers import trainer_plugin  # noqa: F401  (registers the trainers)

QUICK = {"coarse": {"trials": 4, "epochs": 1}, "refine": {"enabled": False},
         "confirm": {"enabled": False}, "overfit": {"samples": 32, "steps": 300},
         "lr_probe": {"iterations": 40}}


def trainer_spec(name: str, trainer: str, **task: Any) -> Any:
    return load_spec({"name": name, "task": {"trainer": trainer, **task},
                      "space": {"hidden": {"type": "int", "low": 8, "high": 64, "log": True},
                                "lr": {"type": "float", "low": 3e-3, "high": 3e-2, "log": True}},
                      "stages": QUICK, "seed": 0})


def verdicts(report: Any) -> dict[str, str]:
    return {s["name"]: s["verdict"] for s in report.stages}


def messages(report: Any) -> dict[str, str]:
    return {s["name"]: s["message"] for s in report.stages}


def test_a_trainer_with_parts_is_probed_and_searched(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    report = Runner(trainer_spec("parts", "own_loop"), store).run()
    assert report.status == "completed", report.message
    seen = verdicts(report)
    assert seen["baseline"] == "skipped"
    assert "No dataset: the trainer loads its own data" in messages(report)["baseline"]
    assert seen["init_check"] == "passed" and seen["overfit"] == "passed"
    assert seen["lr_probe"] in ("passed", "warned") and seen["coarse"] in ("passed", "warned")
    assert report.objective == "val_accuracy" and report.best is not None
    coarse = store.trials("parts", "coarse")
    assert all(t.state == TrialState.COMPLETE for t in coarse)


def test_without_parts_the_probes_are_skipped_saying_what_to_expose(tmp_path: Path) -> None:
    report = Runner(trainer_spec("unprobed", "own_loop_unprobed"),
                    Store(f"sqlite:///{tmp_path / 'u.db'}")).run()
    assert report.status == "completed", report.message
    seen, said = verdicts(report), messages(report)
    for stage in ("baseline", "init_check", "overfit", "lr_probe"):
        assert seen[stage] == "skipped", stage
    for stage in ("init_check", "overfit", "lr_probe"):
        assert "parts=fn(ctx) -> TrainerParts(model, loss, batches)" in said[stage]
    assert seen["coarse"] in ("passed", "warned")


def test_a_trainer_on_the_tasks_dataset_has_a_baseline(tmp_path: Path) -> None:
    report = Runner(trainer_spec("with-data", "own_loop_unprobed", dataset="digits"),
                    Store(f"sqlite:///{tmp_path / 'd.db'}")).run()
    assert report.status == "completed", report.message
    assert verdicts(report)["baseline"] == "passed" and report.baseline is not None


def test_a_raising_trainer_fails_its_trials_and_the_study_goes_on(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    spec = trainer_spec("flaky", "flaky")
    report = Runner(spec, store).run()
    assert report.status == "completed", report.message
    coarse = store.trials("flaky", "coarse")
    failed = [t for t in coarse if t.state == TrialState.FAIL]
    done = [t for t in coarse if t.state == TrialState.COMPLETE]
    assert failed and done  # wide ones crashed, narrow ones trained
    for trial in failed:
        assert trial.params["hidden"] > 40
        assert trial.user_attrs["message"].startswith(
            f"trainer 'flaky' raised ValueError: hidden={trial.params['hidden']} does not fit")


def test_the_objective_of_a_trainer_study_needs_no_data(tmp_path: Path) -> None:
    # the trainer's declaration, found by a worker; a spec's own objective wins
    assert objective_of(trainer_spec("o1", "own_loop")) == ("val_accuracy", "maximize")
    spec = trainer_spec("o2", "own_loop_undeclared", objective="hidden", direction="minimize")
    assert objective_of(spec) == ("hidden", "minimize")
    store = Store(f"sqlite:///{tmp_path / 'o.db'}")
    report = Runner(spec, store).run()
    assert report.status == "completed" and report.objective == "hidden"
    smallest = min(t.params["hidden"] for t in store.trials("o2", "coarse"))
    assert report.best is not None and report.best["value"] == smallest  # minimised


def test_a_trainer_study_with_no_objective_fails_saying_where_to_give_one(tmp_path: Path
                                                                         ) -> None:
    from stagetune.studies.errors import SpecError
    from stagetune.studies.spec import stored_spec
    from stagetune.workers import StagetuneError

    # refused at submit ...
    with pytest.raises(SpecError, match="task.objective: trainer 'own_loop_undeclared' "
                                        "declares no objective"):
        trainer_spec("none", "own_loop_undeclared")
    # ... and a stored spec that somehow lacks one fails its study with the same reason
    store = Store(f"sqlite:///{tmp_path / 'n.db'}")
    spec = stored_spec({"name": "none", "task": {"trainer": "own_loop_undeclared"},
                        "stages": QUICK})
    with pytest.raises(StagetuneError, match="declares no objective"):
        Runner(spec, store).run()
    record = store.study("none")
    assert record.status == "failed" and "task.objective" in record.message


def test_survivors_continue_from_the_trainers_checkpoints_and_confirm_keeps_one(tmp_path: Path) -> None:
    spec = load_spec({"name": "continue", "task": {"trainer": "own_loop"},
                      "space": {"hidden": {"type": "int", "low": 8, "high": 64, "log": True}},
                      "stages": {**QUICK, "baseline": {"enabled": False},
                                 "init_check": {"enabled": False},
                                 "overfit": {"enabled": False}, "lr_probe": {"enabled": False},
                                 "refine": {"trials": 2, "epochs": 3, "warm_start": 1},
                                 "confirm": {"top": 1, "seeds": 2}},
                      "seed": 0})
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    report = Runner(spec, store).run()
    assert report.status == "completed", report.message
    went_on = [t for t in store.trials("continue", "refine") if "continues" in t.user_attrs]
    assert went_on and went_on[0].state == TrialState.COMPLETE
    started = went_on[0].user_attrs["started_after"]
    assert started >= 1  # it trained only the epochs after its coarse checkpoint
    curve = store.curves("continue", "refine", [went_on[0].number])[went_on[0].number]
    assert [int(m["epoch"]) for m in curve][-1] == 3
    # the winner's "weights" are its trainer's last checkpoint
    assert report.weights is not None and report.weights["artifact_id"]


# -- on a real local Ray: plugins load in the workers, a cancel kills the program ---------

@pytest.fixture(scope="module")
def ray_with_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 2-CPU Ray whose workers import the test plugin (they inherit this environment);
    yields the file a running command trainer writes its pid to."""
    import ray

    from stagetune.studies.run.cluster import NAMESPACE

    pid_file = tmp_path_factory.mktemp("ray-trainers") / "pid"
    root = str(Path(__file__).parents[2])
    patch = pytest.MonkeyPatch()
    patch.setenv("STAGETUNE_PLUGINS", "tests.workers.trainer_plugin")
    patch.setenv("STAGETUNE_PLUGINS_DIR", root)
    patch.setenv("PID_FILE", str(pid_file))
    ray.shutdown()  # the process's shared Ray (conftest's ray_local), if up: this needs its own
    ray.init(address="local", num_cpus=2, namespace=NAMESPACE, include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": root}})
    yield pid_file
    ray.shutdown()
    patch.undo()


def command_spec(name: str, trainer: str, epochs: int) -> dict[str, Any]:
    return {"name": name, "task": {"trainer": trainer},
            "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
            "stages": {"coarse": {"trials": 2, "epochs": epochs}, "refine": {"enabled": False},
                       "confirm": {"enabled": False}},
            "resources": {"max_concurrent": 1}, "seed": 0}


@pytest.mark.slow
def test_a_command_study_runs_on_ray_and_a_cancel_kills_the_program(
        ray_with_plugin: Path, tmp_path: Path) -> None:
    import psutil

    from stagetune.studies.run.runner_actor import cancel_study, start_runner, stop_runner, wait_for
    from tests.studies.ray_support import submit, trials, wait_until

    url = f"sqlite:///{tmp_path / 'ray.db'}"
    submit(url, command_spec("ray-command", "script", 2))
    actor = start_runner("ray-command", url)
    report = wait_for(actor)
    stop_runner(actor)
    assert report["status"] == "completed", report["message"]
    assert report["objective"] == "val_accuracy"  # the trainer's, found by a worker
    verdicts = {s["name"]: s["verdict"] for s in report["stages"]}
    assert [verdicts[s] for s in ("baseline", "init_check", "overfit", "lr_probe")] == \
        ["skipped"] * 4
    coarse = trials(url, "ray-command", "coarse")
    assert [t.state for t in coarse] == [TrialState.COMPLETE] * 2
    assert all(t.value == pytest.approx(0.52) for t in coarse)

    store = submit(url, command_spec("ray-hang", "script_hang", 3))
    actor = start_runner("ray-hang", url)
    wait_until(lambda: store.curves("ray-hang", "coarse"), 120, "the program reported epoch 1")
    pid = int(ray_with_plugin.read_text())
    assert psutil.pid_exists(pid)
    assert cancel_study("ray-hang", url)
    wait_until(lambda: not psutil.pid_exists(pid)
               or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10,
               "the cancelled trial's program is gone")
    stop_runner(actor)
    assert store.study("ray-hang").status == "cancelled"
