"""A study whose runner died while coarse's early rung ran resumes: the early trials it
finished are kept, the one it was running goes on from its checkpoint with what it drew,
the rung does not start more than its share, and the probes then run as usual."""

from __future__ import annotations

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

from stagetune.studies.planning.plan import make_plan
from stagetune.studies.run.runner import Runner
from stagetune.studies.search.stages import StageContext
from stagetune.studies.search.stages._coarse import EARLY
from stagetune.studies.search.stages._early import early_count
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store
from tests.studies.ray_support import trials

pytestmark = pytest.mark.slow  # a study killed in its early rung, then resumed

STAGETUNE = str(Path(sys.executable).with_name("stagetune"))
# one trial at a time: the early rung runs before the probes, so a kill lands in it
SPEC = {
    "name": "early-resume",
    "task": {"dataset": "digits", "model": "convnet"},
    "space": {"lr": {"type": "float", "low": 3e-3, "high": 3e-2, "log": True},
              "width": {"type": "int", "low": 8, "high": 32}},
    "stages": {"coarse": {"trials": 20, "epochs": 6, "sampler": "random"},
               "refine": {"enabled": False}, "confirm": {"enabled": False}},
    "resources": {"max_concurrent": 1},
}


def early_trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return trials(url, "early-resume", "coarse")


def test_a_study_killed_in_its_early_rung_resumes_it(tmp_path: Path) -> None:
    spec = load_spec(SPEC)
    count = early_count(StageContext(spec, Store(f"sqlite:///{tmp_path / 'c.db'}"), None,  # type: ignore[arg-type]
                                     "val_accuracy", "maximize", plan=make_plan(spec)))
    assert count >= 4
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    Store(store_url)  # migrate before the child starts, so polling sees the tables
    child = subprocess.Popen([STAGETUNE, "run", str(spec_path), "--db", store_url, "--json"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        done = [t for t in early_trials(store_url) if t.state in (TrialState.COMPLETE,
                                                                  TrialState.PRUNED)]
        if len(done) >= 2:
            break
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        time.sleep(0.1)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    quiet_since, last = time.monotonic(), None  # the local Ray notices a moment later
    while time.monotonic() - quiet_since < 3 and time.monotonic() < deadline + 60:
        now = [(t.number, t.state) for t in early_trials(store_url)]
        if now != last:
            quiet_since, last = time.monotonic(), now
        time.sleep(0.2)

    before = {t.number: t for t in early_trials(store_url)}
    assert all(t.user_attrs.get(EARLY) for t in before.values())
    assert 2 <= len(before) < count
    stages = {s.name: s for s in Store(store_url).study("early-resume").stages}
    assert stages["overfit"].status != "done"  # killed before the probes began

    report = Runner(spec, Store(store_url)).run()
    assert report.status == "completed", report.message

    after = early_trials(store_url)
    numbers = [t.number for t in after]
    assert sorted(numbers) == list(range(len(numbers)))  # no number given twice
    early = [t for t in after if t.user_attrs.get(EARLY)]
    assert len(early) == count  # the rung took up where it stopped, no further
    assert all(t.state != TrialState.RUNNING for t in after)
    for number, trial in before.items():
        kept = after[number]
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):  # kept, not re-run
            assert kept.datetime_complete == trial.datetime_complete
        elif trial.state == TrialState.RUNNING:  # went on with what it drew
            assert kept.user_attrs["interrupted"] == 1 and kept.params == trial.params
    ranges = {s.name: s for s in Store(store_url).study("early-resume").stages}
    assert ranges["lr_probe"].status == "done" and ranges["coarse"].verdict in ("passed", "warned")
