"""Coarse's early rung beside the probes on a real local Ray (2 CPUs), on SQLite and
PostgreSQL: a probe that fails its gate still stops the study, and stops the early trials
running beside it."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from optuna.trial import TrialState

from stagetune.studies.run.runner_actor import start_runner, stop_runner, wait_for
from stagetune.studies.search.stages._coarse import EARLY
from stagetune.studies.store import Store
from tests.studies.ray_support import digits_spec, submit, trials

pytestmark = pytest.mark.usefixtures("ray_local")
EPOCHS = 200  # an early trial's length, were it not stopped: minutes on digits


def at(moment: datetime | None) -> float:
    """A store time (UTC, naive where SQLite dropped the zone) as a timestamp."""
    assert moment is not None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def test_a_probe_failure_beside_the_early_rung_still_stops_the_study(store_url: str) -> None:
    # lr fixed at 1e-7: no step moves the loss, so overfit fails its gate while coarse's
    # first configuration trains beside it; it would run EPOCHS epochs (diagnosis off, so
    # it is not stopped as hopeless), and must stop at its next epoch instead
    off = {"enabled": False}
    spec = digits_spec("beside", resources={"max_concurrent": 2}, fixed={"lr": 1e-7},
                       stages={"coarse": {"trials": 4, "epochs": EPOCHS, "diagnose": False},
                               "refine": off, "confirm": off})
    del spec["space"]["lr"]
    store = submit(store_url, spec)
    actor = start_runner("beside", store_url)
    report = wait_for(actor)
    stop_runner(actor)

    assert report["status"] == "stopped", report["message"]
    assert report["message"].startswith("overfit:")
    verdicts = {s["name"]: s["verdict"] for s in report["stages"]}
    assert verdicts["overfit"] == "failed" and verdicts["lr_probe"] is None
    assert verdicts["coarse"] == "skipped" and verdicts["refine"] is None

    stages = {s.name: s for s in Store(store_url).study("beside").stages}
    overfit = (at(stages["overfit"].started_at), at(stages["overfit"].finished_at))
    coarse = trials(store_url, "beside", "coarse")
    assert coarse and all(t.user_attrs.get(EARLY) for t in coarse)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
               for t in coarse), [(t.number, t.state) for t in coarse]
    # the first went out before the probe started, and was stopped at its next epoch
    # after overfit failed (within seconds: its loss does not move over 10 steps)
    first = min(coarse, key=lambda t: t.number)
    assert first.datetime_start is not None and first.datetime_start.timestamp() <= overfit[0]
    assert first.user_attrs["status"] == "cancelled", first.user_attrs
    assert first.user_attrs["message"] == "stopped because overfit failed"
    assert first.state == TrialState.FAIL and first.user_attrs["epochs"] < EPOCHS
    # nothing ran on after the study stopped, and what ran is charged to coarse
    rows = sum(len(c) for c in store.curves("beside", "coarse").values())
    time.sleep(2)
    assert sum(len(c) for c in store.curves("beside", "coarse").values()) == rows
    assert stages["coarse"].epochs == pytest.approx(sum(t.user_attrs["epochs"] for t in coarse))
    assert "stopped when overfit failed" in stages["coarse"].message
