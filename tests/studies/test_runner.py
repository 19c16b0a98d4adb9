"""Whole staged studies on real data, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from stagetune.studies.run.runner import Runner
from stagetune.studies.search.stages import ORDER
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store

EXAMPLES = Path(__file__).parents[2] / "examples"


def spec_from_example(example: str, **changes: Any) -> Any:
    data = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    data = copy.deepcopy(data)
    for key, value in changes.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return load_spec(data)


def test_logits_scaled_by_50_stop_the_study_at_init_check(tmp_path: Path) -> None:
    spec = spec_from_example("digits", name="scaled", **{"task.model": "logits_x50_convnet"})
    report = Runner(spec, Store(f"sqlite:///{tmp_path / 's.db'}")).run()
    assert report.status == "stopped"
    verdicts = {s["name"]: s["verdict"] for s in report.stages}
    assert verdicts["init_check"] == "failed" and verdicts["overfit"] is None
    assert "too high" in report.message and report.message.startswith("init_check:")


def test_a_model_that_cannot_learn_stops_before_any_training(tmp_path: Path) -> None:
    spec = spec_from_example("digits", name="frozen", **{"task.model": "frozen_convnet"})
    report = Runner(spec, Store(f"sqlite:///{tmp_path / 'f.db'}")).run()
    assert report.status == "stopped"
    verdicts = {s["name"]: s["verdict"] for s in report.stages}
    # no parameter takes a gradient: init_check sees it before overfit spends a step
    assert verdicts["init_check"] == "failed" and verdicts["overfit"] is None
    assert "requires a gradient" in report.message and report.message.startswith("init_check:")


def test_continue_on_failure_goes_past_a_failed_gate(tmp_path: Path) -> None:
    spec = spec_from_example("digits", name="go-on", **{
        "task.model": "logits_x50_convnet", "stages.continue_on_failure": True,
        "stages.coarse": {"trials": 2, "epochs": 1}, "stages.refine": {"enabled": False},
        "stages.confirm": {"enabled": False}})
    report = Runner(spec, Store(f"sqlite:///{tmp_path / 'g.db'}")).run()
    verdicts = {s["name"]: s["verdict"] for s in report.stages}
    assert verdicts["init_check"] == "failed"
    assert verdicts["coarse"] in ("passed", "warned") and verdicts["refine"] == "skipped"
    assert report.status == "completed"


def test_a_spec_that_differs_from_the_stored_one_is_refused(tmp_path: Path) -> None:
    from stagetune.studies.errors import StudyConflictError

    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    quick = {"stages.coarse": {"trials": 1, "epochs": 1}, "stages.refine": {"enabled": False},
             "stages.confirm": {"enabled": False}}
    Runner(spec_from_example("digits", **quick), store).run()
    with pytest.raises(StudyConflictError, match="different spec"):
        Runner(spec_from_example("digits", seed=1, **quick), store).run()


def test_warm_starts_beyond_refines_trials_are_never_left_waiting(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from tests.studies.ray_support import NO_PROBES, digits_spec

    spec = load_spec(digits_spec("few-refine", resources={"max_concurrent": 1}, stages={
        **NO_PROBES, "coarse": {"trials": 4, "epochs": 1},
        "refine": {"trials": 1, "epochs": 2, "warm_start": 3}, "confirm": {"enabled": False}}))
    store = Store(f"sqlite:///{tmp_path / 'w.db'}")
    report = Runner(spec, store).run()
    assert report.status == "completed", report.message
    refine = store.trials("few-refine", "refine")
    assert [t.state for t in refine] == [TrialState.COMPLETE]  # one trial, and nothing queued
    assert "continues" in refine[0].user_attrs  # the best survivor went on

    # a stop rule ends refine (any trial reaches this goal) before its queue is through:
    # what is left is closed, saying why
    spec = load_spec(digits_spec("goal-refine", resources={"max_concurrent": 1}, goal=0.01,
                                 stages={**NO_PROBES, "coarse": {"trials": 4, "epochs": 1},
                                         "refine": {"trials": 3, "epochs": 2, "warm_start": 3},
                                         "confirm": {"enabled": False}}))
    assert Runner(spec, store).run().status == "completed"
    refine = store.trials("goal-refine", "refine")
    assert TrialState.WAITING not in {t.state for t in refine}
    assert refine[0].state == TrialState.COMPLETE
    left = [t for t in refine if t.user_attrs.get("status") == "not_run"]
    assert left and all(t.state == TrialState.FAIL and "refine ended first" in
                        t.user_attrs["message"] for t in left)


def test_a_study_whose_dataset_cannot_load_fails_with_the_reason(tmp_path: Path) -> None:
    """It fails before its first stage (the objective follows from the dataset's task):
    recorded failed with why, not left pending for a supervisor to restart forever."""
    from stagetune.workers import StagetuneError

    spec = load_spec({"name": "no-data", "task": {"dataset": "cifar10", "model": "convnet"},
                      "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}})
    store = Store(f"sqlite:///{tmp_path / 'n.db'}")
    with pytest.raises(StagetuneError):
        Runner(spec, store).run()
    record = store.study("no-data")
    assert record.status == "failed" and "CIFAR10 not found" in record.message
    assert all(s.status == "pending" for s in record.stages)


def test_a_study_being_cancelled_is_not_taken_up_by_a_runner(tmp_path: Path) -> None:
    """A runner that starts after a cancel was asked for records the study cancelled and
    runs nothing (the supervisor may have started it just before the cancel)."""
    from tests.studies.ray_support import NO_PROBES, digits_spec

    spec = load_spec(digits_spec("late-runner", resources={}, stages={
        **NO_PROBES, "coarse": {"trials": 2, "epochs": 1}}))
    store = Store(f"sqlite:///{tmp_path / 'l.db'}")
    store.open_study(spec.name, spec.model_dump(mode="json"), list(ORDER))
    assert store.set_status("late-runner", "cancelling", only_from=("pending", "running"))
    assert Runner(spec, store).run().status == "cancelled"
    record = store.study("late-runner")
    assert record.status == "cancelled" and all(s.status == "pending" for s in record.stages)
    assert store.trials("late-runner", "coarse") == []
    # a compare-and-set that does not hold changes nothing
    assert not store.set_status("late-runner", "running", only_from=("cancelling",))
    assert store.study("late-runner").status == "cancelled"


def test_trials_a_runner_restart_left_queued_say_why(tmp_path: Path) -> None:
    """A confirm run queued but not begun when its runner died is closed on resume with a
    reason the API and the trial page show, and runs again as a new trial (one that was
    running goes on instead: tests/studies/test_search.py)."""
    from stagetune.studies.reporting import views
    from stagetune.studies.search.loop import fail_waiting

    store = Store(f"sqlite:///{tmp_path / 'o.db'}")
    spec = spec_from_example("digits", name="orphans")
    store.open_study(spec.name, spec.model_dump(mode="json"), list(ORDER))
    study = store.optuna_study("orphans", "confirm", "maximize")
    study.enqueue_trial({}, user_attrs={"config": 0, "seed": 1})  # left queued
    assert fail_waiting(study, "not run: its runner stopped") == 1
    rows = [views.trial_row(*t) for t in views.all_trials(store, "orphans")]
    assert [(r["stage"], r["state"], r["status"]) for r in rows] == [
        ("confirm", "failed", "not_run")]
    assert rows[0]["reason"] == "not run: its runner stopped"