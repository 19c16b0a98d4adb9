"""Studies on a real local Ray (2 CPUs): the runner actor, concurrency, data reuse,
weights, cancel, a killed worker and a killed runner. Each on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import ray
import torch
from optuna.trial import TrialState

from stagetune.studies.run.runner_actor import cancel_study, find_runner, start_runner, stop_runner, wait_for
from stagetune.studies.store import Store
from stagetune.studies.store.weights import fetch_weights
from stagetune.workers.config import parse_params
from stagetune.workers.data import load_dataset
from stagetune.workers.models import build_model
from tests.studies.ray_support import (
    NO_PROBES,
    digits_spec,
    max_overlap,
    progress,
    submit,
    trials,
    wait_until,
)
from tests.studies.test_runner import spec_from_example

pytestmark = pytest.mark.usefixtures("ray_local")
STAGETUNE = str(Path(sys.executable).with_name("stagetune"))


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def finished(store_url: str, study: str, stage: str) -> list[Any]:
    return [t for t in trials(store_url, study, stage)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


@pytest.mark.slow
def test_a_full_digits_study_completes_through_the_runner_actor(store_url: str,
                                                                 tmp_path: Path) -> None:
    # the example on a smaller budget; cpus_per_trial 0.5 lets Ray run 4 trials at once on
    # 2 CPUs, so max_concurrent alone must hold it to 2
    spec = spec_from_example("digits", **{
        "stages.coarse": {"trials": 10, "epochs": 2},
        "stages.refine": {"trials": 6, "epochs": 6, "warm_start": 3},
        "stages.confirm": {"top": 2, "seeds": 2}, "budget": None, "goal": None,
        "resources": {"cpus_per_trial": 0.5, "max_concurrent": 2}})
    store = submit(store_url, spec.model_dump(mode="json"))
    actor = start_runner(spec.name, store_url)
    assert find_runner(spec.name, store_url) is not None  # named: any process can find it
    report = wait_for(actor)
    stop_runner(actor)

    assert report["status"] == "completed", report["message"]
    assert [s["name"] for s in report["stages"]] == ["data_check", "baseline", "init_check",
                                                     "overfit", "lr_probe", "coarse", "refine",
                                                     "confirm"]
    assert all(s["verdict"] in ("passed", "warned") for s in report["stages"]), report["stages"]
    assert report["best"]["value"] >= 0.98 and report["best"]["value"] > report["baseline"]
    assert report["compute"]["epochs"] > 0 and report["compute"]["seconds"] > 0
    # every stage is its own Optuna study in the store, named <study>:<stage>
    names = {s.study_name for s in optuna.get_all_study_summaries(store.optuna_storage)}
    assert {f"{spec.name}:{stage}" for stage in ("coarse", "refine", "confirm")} <= names
    assert store.curves(spec.name, "refine")  # per-epoch metrics arrived over the wire

    by_stage = {stage: store.trials(spec.name, stage) for stage in ("coarse", "refine", "confirm")}
    ran = [t for trials_ in by_stage.values() for t in trials_]
    assert all(t.state != TrialState.FAIL for t in ran), [(t.number, t.state) for t in ran]
    assert (len(by_stage["coarse"]), len(by_stage["refine"])) == (10, 6)
    # confirm runs 2 seeds of the top 2 refine trials that completed: when the asynchronous
    # pruner stopped all but one (which depends on the order concurrent trials report in),
    # there is one configuration to confirm
    completed = sum(t.state == TrialState.COMPLETE for t in by_stage["refine"])
    assert len(by_stage["confirm"]) == 2 * min(2, completed), (completed, by_stage["confirm"])
    workers = [t.user_attrs["worker"] for t in ran if "worker" in t.user_attrs]
    assert len(workers) >= len(ran) - 3  # all but continuations the pruner stopped on replay
    assert max_overlap([(w["started_at"], w["finished_at"]) for w in workers]) == 2
    assert {w["device"] for w in workers} == {"cpu"}
    # the data is loaded once per worker process, and later trials there reuse it
    pids = {w["pid"] for w in workers}
    for pid in pids:
        assert sum(not w["data_cached"] for w in workers if w["pid"] == pid) <= 1
    assert sum(w["data_cached"] for w in workers) >= len(workers) - len(pids)

    # the winner's weights came back to the runner and load into the model they came from
    path = fetch_weights(report["weights"]["artifact_id"], tmp_path / "winner.pt")
    _, model_cfg = parse_params(report["best"]["params"])
    build_model("convnet", load_dataset("digits"), model_cfg).load_state_dict(torch.load(path))

    # a second run on the same store finds the study done and changes nothing
    again = wait_for(start_runner(spec.name, store_url))
    assert again["best"] == report["best"]


def test_cancel_stops_running_trials_within_10_seconds(store_url: str) -> None:
    spec = digits_spec("ray-cancel", resources={"max_concurrent": 2},
                       stages={**NO_PROBES, "coarse": {"trials": 4, "epochs": 60},
                               "refine": {"enabled": False}, "confirm": {"enabled": False}})
    store = submit(store_url, spec)
    actor = start_runner("ray-cancel", store_url)
    wait_until(lambda: len(store.curves("ray-cancel", "coarse")) == 2, 120,
               "two trials are running and reporting")

    started = time.monotonic()
    assert cancel_study("ray-cancel", store_url)
    assert time.monotonic() - started < 10
    rows = sum(len(c) for c in store.curves("ray-cancel", "coarse").values())
    stop_runner(actor)

    assert store.study("ray-cancel").status == "cancelled"
    coarse = trials(store_url, "ray-cancel", "coarse")
    # the trials running at the cancel are cancelled; ASHA may have pruned one at epoch 1
    outcomes = [(t.state, t.user_attrs["status"]) for t in coarse]
    assert (TrialState.FAIL, "cancelled") in outcomes
    assert set(outcomes) <= {(TrialState.FAIL, "cancelled"), (TrialState.PRUNED, "stopped")}
    time.sleep(2)  # stopped means stopped: no epoch arrives after the cancel returned
    assert sum(len(c) for c in store.curves("ray-cancel", "coarse").values()) == rows
    assert ("study_cancelled", "cancelled on request; resume to go on") in store.events("ray-cancel")


@pytest.mark.slow
def test_a_worker_killed_mid_trial_continues_from_its_checkpoint(store_url: str) -> None:
    # a trial hands over a checkpoint after every epoch it has reported; pruning is off
    # (one configuration), so the victim must run all six epochs
    spec = digits_spec("ray-sigkill", resources={"max_concurrent": 1, "max_retries": 2},
                       stages={**NO_PROBES, "coarse": {"trials": 1, "epochs": 6},
                               "refine": {"enabled": False}, "confirm": {"enabled": False}})
    store = submit(store_url, spec)
    actor = start_runner("ray-sigkill", store_url)
    victim = wait_until(lambda: [t for t in progress(actor)["trials"] if "pid" in t and
                                 len(store.curves("ray-sigkill", "coarse").get(t["job"], [])) >= 4],
                        120, "a trial has reported four epochs")[0]
    os.kill(victim["pid"], signal.SIGKILL)
    report = wait_for(actor)
    stop_runner(actor)

    assert report["status"] == "completed", report["message"]
    (killed,) = trials(store_url, "ray-sigkill", "coarse")
    assert killed.state == TrialState.COMPLETE
    assert killed.user_attrs["restarts"] == 1
    assert killed.user_attrs["worker"]["pid"] != victim["pid"]
    # its last checkpoint, after the last epoch it reported or the one before (it was
    # killed between that report and that checkpoint), not a restart
    assert killed.user_attrs["started_after"] >= 3
    curve = store.curves("ray-sigkill", "coarse")[victim["job"]]
    assert [m["epoch"] for m in curve] == [1, 2, 3, 4, 5, 6]
    # charged for what ran: 6 epochs, plus the one run twice if it was killed there
    assert killed.user_attrs["epochs"] == 6 + killed.user_attrs.get("repeats", 0) <= 7
    assert killed.user_attrs["checkpoint"]["epoch"] == 6


@pytest.mark.slow
def test_a_killed_runner_is_replaced_by_stagetune_resume(store_url: str, ray_local: str) -> None:
    spec = digits_spec("ray-resume", resources={"max_concurrent": 2},
                       stages={**NO_PROBES, "coarse": {"trials": 6, "epochs": 2},
                               "refine": {"enabled": False}, "confirm": {"enabled": False}})
    store = submit(store_url, spec)
    actor = start_runner("ray-resume", store_url)
    wait_until(lambda: len(finished(store_url, "ray-resume", "coarse")) >= 2, 120,
               "two coarse trials have finished")
    ray.kill(actor)
    wait_until(lambda: find_runner("ray-resume", store_url) is None, 30, "the runner is gone")
    before = {t.number: t for t in trials(store_url, "ray-resume", "coarse")}
    curves_before = store.curves("ray-resume", "coarse")

    out = subprocess.run([STAGETUNE, "resume", "ray-resume", "--db", store_url, "--json"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "RAY_ADDRESS": ray_local})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "completed"

    after = trials(store_url, "ray-resume", "coarse")
    numbers = [t.number for t in after]
    assert sorted(numbers) == list(range(len(numbers)))  # no number given twice
    assert sum(t.state in FINISHED for t in after) == len(after)
    assert sum(t.user_attrs.get("status") != "cancelled" for t in after) == 6
    for number, trial in before.items():
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):  # kept, not run again
            assert after[number].datetime_complete == trial.datetime_complete
            assert store.curves("ray-resume", "coarse")[number] == curves_before[number]
        elif trial.state == TrialState.RUNNING:  # left by the dead runner: it went on
            assert after[number].state in (TrialState.COMPLETE, TrialState.PRUNED)
            assert after[number].user_attrs["interrupted"] == 1
    assert Store(store_url).study("ray-resume").status == "completed"
