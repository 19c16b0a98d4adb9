"""PostgreSQL unreachable mid-study (a cut TCP proxy; the server keeps running): an outage
shorter than STAGETUNE_DB_RETRY_SECONDS costs a wait, never a trial and never a reported
epoch; a longer one fails the study with the reason, no trial left running, and a resume
finishes it."""

from __future__ import annotations

import time
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from stagetune.studies.run.runner_actor import start_runner, stop_runner
from stagetune.studies.search.loop import ABANDONED
from stagetune.studies.store import Store
from tests.studies.db_proxy import flaky_proxy
from tests.studies.ray_support import (
    NO_PROBES,
    digits_spec,
    finish,
    progress,
    submit,
    trials,
    wait_until,
)

# slow: studies through a database cut of seconds
pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]

# What Optuna sends first when it tells a trial (and only then): the runner's own write,
# cut off in flight while other trials run.
TELL = (b"FROM trials", b"FOR UPDATE")
EPOCHS = 3


def spec(name: str) -> dict[str, object]:
    return digits_spec(name, resources={"max_concurrent": 2},
                       stages={**NO_PROBES, "coarse": {"trials": 6, "epochs": EPOCHS},
                               "refine": {"enabled": False}, "confirm": {"enabled": False}})


def states(coarse: list[optuna.trial.FrozenTrial]) -> str:
    return "; ".join(f"{t.number} {t.state.name} {t.user_attrs.get('status')} "
                     f"{t.user_attrs.get('message')}" for t in coarse)


def assert_nothing_reported_is_lost(store: Store, study: str,
                                    coarse: list[optuna.trial.FrozenTrial]) -> None:
    """Every epoch a finished trial ran is in the store, and its objective in Optuna."""
    curves = store.curves(study, "coarse")
    for t in coarse:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        ran = int(t.user_attrs["epochs"])
        recorded = [m["epoch"] for m in curves.get(t.number, [])]
        assert recorded == list(range(1, ran + 1)), (t.number, recorded, ran)
        assert sorted(t.intermediate_values) == recorded, (t.number, t.intermediate_values)
        assert all(t.intermediate_values[m["epoch"]] == m["val_accuracy"]
                   for m in curves[t.number])


@pytest.mark.slow
def test_a_cut_shorter_than_the_retry_window_costs_no_trial(postgres_url: str) -> None:
    """The runner's tell is cut off in flight while another trial trains; the cut lasts 8 s
    of a 30 s window. The trials go on through it (the runner does not stop them), and
    none fails, restarts or loses an epoch."""
    with flaky_proxy(postgres_url) as proxy:
        store = submit(postgres_url, spec("outage-brief"))
        actor = start_runner("outage-brief", proxy.url, db_retry_seconds=30)
        wait_until(lambda: any(t.state.is_finished()
                               for t in trials(postgres_url, "outage-brief", "coarse")),
                   120, "a coarse trial has finished")
        fired = proxy.cut_on(*TELL)
        assert fired.wait(120), "the runner never told a trial"
        time.sleep(2)
        during = progress(actor)["trials"]  # the executor's own record: no database
        time.sleep(6)
        proxy.restore()
        report = finish(actor, 240)
        stop_runner(actor)

    assert during, "the runner stopped its trials when the database went away"
    assert report["status"] == "completed", report["message"]
    coarse = trials(postgres_url, "outage-brief", "coarse")
    assert sorted(t.number for t in coarse) == list(range(6)), states(coarse)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in coarse), states(coarse)
    assert not any(t.user_attrs.get("interrupted") or t.user_attrs.get("restarts")
                   for t in coarse), states(coarse)
    assert_nothing_reported_is_lost(store, "outage-brief", coarse)


def running(url: str, study: str) -> list[Any]:
    return [(stage, t.number) for stage in ("coarse", "refine", "confirm")
            for t in trials(url, study, stage) if t.state == TrialState.RUNNING]


@pytest.mark.slow
def test_a_cut_longer_than_the_retry_window_fails_the_study_then_resumes(
        postgres_url: str) -> None:
    """Cut while the runner tells a trial, for longer than its 4 s window: the study
    fails with the reason and no trial left running (those it stopped are `abandoned`,
    their epochs charged); a resume runs them again and completes the study."""
    with flaky_proxy(postgres_url) as proxy:
        store = submit(postgres_url, spec("outage-long"))
        actor = start_runner("outage-long", proxy.url, db_retry_seconds=4)
        wait_until(lambda: any(t.state.is_finished()
                               for t in trials(postgres_url, "outage-long", "coarse")),
                   120, "a coarse trial has finished")
        assert proxy.cut_on(*TELL).wait(120), "the runner never told a trial"
        wait_until(lambda: progress(actor)["result"], 60, "the runner gives up")
        proxy.restore()  # in time for the runner to record why it gave up
        report = finish(actor, 240)
        stop_runner(actor)

    assert report["status"] == "failed"
    record = store.study("outage-long")
    assert record.status == "failed"
    assert record.message.startswith("the database failed for 4 s ("), record.message
    assert "127.0.0.1" not in record.message and "postgres" not in record.message
    assert running(postgres_url, "outage-long") == []
    # never half-written: coarse is not marked done, and every finished trial is whole
    assert next(s for s in record.stages if s.name == "coarse").status == "running"
    coarse = trials(postgres_url, "outage-long", "coarse")
    abandoned = [t for t in coarse if t.user_attrs.get("status") == ABANDONED]
    assert abandoned, states(coarse)  # the trial being told, and the one training beside it
    for t in abandoned:
        assert t.state == TrialState.FAIL
        assert t.user_attrs["message"].startswith("stopped when its study failed: the "
                                                  "database failed for 4 s"), t.user_attrs
        # charged what it recorded (a report still on its way may land after)
        assert t.user_attrs["epochs"] <= len(store.curves_of("outage-long", "coarse", t.number))
    assert sum(t.user_attrs["epochs"] for t in abandoned) > 0
    assert_nothing_reported_is_lost(store, "outage-long", coarse)

    resumed = start_runner("outage-long", postgres_url, db_retry_seconds=4)
    report = finish(resumed, 240)
    stop_runner(resumed)
    assert report["status"] == "completed", report["message"]
    assert running(postgres_url, "outage-long") == []
    coarse = trials(postgres_url, "outage-long", "coarse")
    ran = [t for t in coarse if t.user_attrs.get("status") != ABANDONED]
    assert len(ran) == 6, states(coarse)  # the abandoned ones ran again, under new numbers
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ran), states(coarse)
    assert_nothing_reported_is_lost(store, "outage-long", coarse)
