"""A study killed in the middle of coarse resumes without redoing or renumbering trials,
and the trials it was running go on from their checkpoints."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from stagetune.studies.run.runner import Runner
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store
from tests.studies.ray_support import trials

pytestmark = pytest.mark.slow  # a study killed mid-coarse, then resumed

STAGETUNE = str(Path(sys.executable).with_name("stagetune"))
SPEC = {
    "name": "resume-me",
    "task": {"dataset": "digits", "model": "convnet"},
    "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
              "width": {"type": "int", "low": 8, "high": 32}},
    "stages": {"baseline": {"enabled": False}, "lr_probe": {"enabled": False},
               "coarse": {"trials": 10, "epochs": 4, "sampler": "random"},
               "refine": {"enabled": False}, "confirm": {"enabled": False}},
}


def coarse_trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return trials(url, "resume-me", "coarse")  # one storage per store, however often polled


def test_a_study_killed_mid_coarse_resumes_without_rerunning_or_renumbering(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The whole `stagetune run` process group (CLI and its local Ray) dies here; on
    # PostgreSQL the same recovery is tested with a killed runner actor
    # (tests/studies/test_ray_runner.py), so this one runs on SQLite only.
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    Store(store_url)  # migrate before the child starts, so polling sees the tables
    child = subprocess.Popen([STAGETUNE, "run", str(spec_path), "--db", store_url, "--json"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        done = [t for t in coarse_trials(store_url)
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        if len(done) >= 3:
            break
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        time.sleep(0.1)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    # The local Ray's processes share the CLI's fate but notice its death only after a
    # moment, in which its runner may still tell a 1-epoch trial: wait for a quiet store.
    quiet_since, last = time.monotonic(), None
    while time.monotonic() - quiet_since < 3 and time.monotonic() < deadline + 60:
        now = [(t.number, t.state) for t in coarse_trials(store_url)]
        if now != last:
            quiet_since, last = time.monotonic(), now
        time.sleep(0.2)

    before = {t.number: t for t in coarse_trials(store_url)}
    finished_before = {n: t for n, t in before.items()
                       if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert 3 <= len(finished_before) < 10

    with caplog.at_level(logging.WARNING, logger="stagetune.studies.search.loop"):
        report = Runner(load_spec(SPEC), Store(store_url)).run()
    assert report.status == "completed", report.message

    after = coarse_trials(store_url)
    numbers = [t.number for t in after]
    assert sorted(numbers) == list(range(len(numbers)))  # no number given twice
    finished = [t for t in after if t.state in (TrialState.COMPLETE, TrialState.PRUNED,
                                                 TrialState.FAIL)]
    assert len(finished) == 10
    for number, trial in finished_before.items():  # finished trials kept, not re-run
        kept = after[number]
        assert kept.state == trial.state
        assert kept.value == trial.value and kept.datetime_complete == trial.datetime_complete
    # a trial that was running at the kill goes on under its number, after its checkpoint
    # (or from its start, if it had none), its values kept; one log line says so
    orphaned = [n for n, t in before.items() if t.state == TrialState.RUNNING]
    for number in orphaned:
        went_on, saved = after[number], before[number].user_attrs.get("checkpoint")
        assert went_on.state in (TrialState.COMPLETE, TrialState.PRUNED), went_on.user_attrs
        assert went_on.user_attrs["interrupted"] == 1
        assert went_on.user_attrs.get("started_after", 0) == (saved["epoch"] if saved else 0)
        assert all(went_on.intermediate_values[e] == v
                   for e, v in before[number].intermediate_values.items())
    said = [r.getMessage() for r in caplog.records if "when its runner stopped" in r.getMessage()]
    assert len(said) == len(orphaned), said
