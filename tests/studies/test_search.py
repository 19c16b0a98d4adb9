"""A trial whose runner dies goes on from its last checkpoint under the next runner, on a
real local Ray (2 CPUs) with real Optuna on SQLite and PostgreSQL.

The runner actor is killed, as a restart of the service kills it (in docker compose the
API container is the Ray head); the trial's attempt stops at its next report, which has
no runner to go to (after a real restart it dies with the head: the store is left the
same). The next runner continues the same Optuna trial after the epoch of the checkpoint
the store holds, charges what the dead runner's attempt spent and what runs again, and
records every epoch once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from stagetune.studies.run.runner_actor import cancel_study, find_runner, start_runner, stop_runner
from stagetune.studies.store import Store
from stagetune.studies.store.weights import artifact_store
from tests.studies.ray_support import NO_PROBES, digits_spec, finish, submit, trials, wait_until

# slow: runners killed mid-trial, their studies run to the end
pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]
EPOCHS = 6
BUDGET = 16  # room for the trial and the epochs it may run twice


def kill_mid_trial(store: Store, study: str, stage: str, reported: int) -> tuple[Any, int]:
    """Start the study's runner and kill it once the stage's one running trial has
    reported `reported` epochs; the trial left running and the last epoch it reported."""
    actor = start_runner(study, store.url)
    wait_until(lambda: any(len(c) >= reported for c in store.curves(study, stage).values()),
               180, f"a {stage} trial has reported {reported} epochs")
    ray.kill(actor)
    wait_until(lambda: find_runner(study, store.url) is None, 30, "the runner is gone")
    (left,) = [t for t in trials(store.url, study, stage) if t.state == TrialState.RUNNING]
    return left, max(int(m["epoch"]) for m in store.curves(study, stage)[left.number])


def run_to_the_end(store: Store, study: str) -> dict[str, Any]:
    actor = start_runner(study, store.url)
    report = finish(actor, 240)
    stop_runner(actor)
    assert report["status"] == "completed", report["message"]
    return report


@pytest.mark.parametrize("stage, database", [("coarse", "sqlite"), ("refine", "postgresql")])
def test_a_trial_whose_runner_died_goes_on_from_its_checkpoint(
        stage: str, database: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store_url = f"sqlite:///{tmp_path / 'store.db'}" if database == "sqlite" \
        else str(request.getfixturevalue("postgres_url"))
    name = f"goes-on-{stage}"
    stages = {**NO_PROBES, "coarse": {"enabled": False}, "refine": {"enabled": False},
              "confirm": {"enabled": False}}
    # one trial, so none is pruned; refine without a pruner runs its full trial too
    stages[stage] = ({"trials": 1, "epochs": EPOCHS} if stage == "coarse" else
                     {"trials": 1, "epochs": EPOCHS, "pruner": "none"})
    store = submit(store_url, digits_spec(name, stages=stages, budget={"epochs": BUDGET},
                                          resources={"max_concurrent": 1}))
    left, reported = kill_mid_trial(store, name, stage, reported=2)
    saved = left.user_attrs["checkpoint"]
    assert 1 <= saved["epoch"] <= reported < EPOCHS  # checkpoints follow their reports

    report = run_to_the_end(store, name)
    (trial,) = trials(store.url, name, stage)
    assert trial.number == left.number and trial.state == TrialState.COMPLETE
    assert trial.user_attrs["status"] == "completed"
    assert trial.user_attrs["interrupted"] == 1
    assert trial.user_attrs["started_after"] == saved["epoch"]
    # its values from before the restart kept, every epoch recorded once
    assert sorted(trial.intermediate_values) == list(range(1, EPOCHS + 1))
    assert all(trial.intermediate_values[e] == v for e, v in left.intermediate_values.items())
    assert [int(m["epoch"]) for m in store.curves(name, stage)[trial.number]] == \
        list(range(1, EPOCHS + 1))
    # charged: every epoch, and again those after the checkpoint that ran before the restart
    assert trial.user_attrs["epochs"] == EPOCHS + reported - saved["epoch"]
    assert trial.user_attrs.get("repeats", 0) == reported - saved["epoch"]
    spent = {s["name"]: s["spent"]["epochs"] for s in report["stages"]}
    assert spent[stage] == trial.user_attrs["epochs"]
    assert report["compute"]["epochs"] <= BUDGET
    # the checkpoint it went on from was replaced, not left behind
    assert trial.user_attrs["checkpoint"]["artifact_id"] != saved["artifact_id"]
    with pytest.raises(ArtifactNotFound):
        artifact_store().open_reader(saved["artifact_id"])


def test_an_interrupted_confirm_run_goes_on_in_its_own_trial(postgres_url: str) -> None:
    name = "goes-on-confirm"
    store = submit(postgres_url, digits_spec(name, resources={"max_concurrent": 1}, stages={
        **NO_PROBES, "coarse": {"trials": 2, "epochs": 1}, "refine": {"enabled": False},
        "confirm": {"top": 1, "seeds": 1, "epochs": EPOCHS}}))
    left, reported = kill_mid_trial(store, name, "confirm", reported=2)
    saved = left.user_attrs["checkpoint"]

    run_to_the_end(store, name)
    (trial,) = trials(store.url, name, "confirm")
    assert trial.number == left.number and trial.state == TrialState.COMPLETE
    assert (trial.user_attrs["config"], trial.user_attrs["seed"]) == (0, 0)
    assert trial.user_attrs["started_after"] == saved["epoch"]
    assert trial.user_attrs["epochs"] == EPOCHS + reported - saved["epoch"]
    assert [int(m["epoch"]) for m in store.curves(name, "confirm")[trial.number]] == \
        list(range(1, EPOCHS + 1))
    assert trial.user_attrs["weights"]  # the winner's weights, as from an unbroken run
    # a confirm run's checkpoints serve only its own continuation: none is left behind
    for artifact in (saved, trial.user_attrs["checkpoint"]):
        with pytest.raises(ArtifactNotFound):
            artifact_store().open_reader(artifact["artifact_id"])


def test_a_trial_cancelled_by_the_user_is_not_continued(tmp_path: Path) -> None:
    name, epochs = "cancelled-stays", 3
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = submit(url, digits_spec(name, resources={"max_concurrent": 1}, stages={
        **NO_PROBES, "coarse": {"trials": 1, "epochs": epochs}, "refine": {"enabled": False},
        "confirm": {"enabled": False}}))
    actor = start_runner(name, url)
    wait_until(lambda: store.curves(name, "coarse"), 180, "a coarse trial has reported")
    assert cancel_study(name, url)
    stop_runner(actor)
    (cancelled,) = trials(url, name, "coarse")

    run_to_the_end(store, name)  # a resume: the cancelled trial's slot runs again, anew
    kept, again = trials(url, name, "coarse")
    assert kept.state == TrialState.FAIL and kept.user_attrs == cancelled.user_attrs
    assert kept.user_attrs["status"] == "cancelled"
    assert again.state == TrialState.COMPLETE and "started_after" not in again.user_attrs
    assert sorted(again.intermediate_values) == list(range(1, epochs + 1))
