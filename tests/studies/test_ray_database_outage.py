"""PostgreSQL unreachable mid-study (a cut TCP proxy; the server keeps running): a brief
outage costs a wait, a long one fails the study with the reason, never half-written."""

from __future__ import annotations

import time

import pytest
from optuna.trial import TrialState

from stagetune.studies.runner_actor import start_runner, stop_runner
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

pytestmark = pytest.mark.usefixtures("ray_local")


def spec(name: str) -> dict[str, object]:
    return digits_spec(name, resources={"max_concurrent": 2},
                       stages={**NO_PROBES, "coarse": {"trials": 6, "epochs": 3},
                               "refine": {"enabled": False}, "confirm": {"enabled": False}})


def test_a_brief_outage_costs_a_wait_not_the_study(postgres_url: str) -> None:
    with flaky_proxy(postgres_url) as proxy:
        store = submit(postgres_url, spec("outage-brief"))
        actor = start_runner("outage-brief", proxy.url, db_retry_seconds=30)
        wait_until(lambda: any(t.state == TrialState.COMPLETE
                               for t in trials(postgres_url, "outage-brief", "coarse")),
                   120, "a coarse trial has finished")
        proxy.cut()
        time.sleep(3)
        proxy.restore()
        report = finish(actor, 240)
        stop_runner(actor)

    assert report["status"] == "completed", report["message"]
    coarse = trials(postgres_url, "outage-brief", "coarse")
    numbers = [t.number for t in coarse]
    assert sorted(numbers) == list(range(len(numbers)))
    states = "; ".join(f"{t.number} {t.state.name} {t.user_attrs.get('status')} "
                       f"{t.user_attrs.get('message')}" for t in coarse)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
               for t in coarse) == len(coarse), states
    assert sum(t.user_attrs.get("status") != "cancelled" for t in coarse) == 6, states
    curves = store.curves("outage-brief", "coarse")
    for t in coarse:  # a completed trial's curve is whole, even if reports were missed
        if t.state == TrialState.COMPLETE:
            assert [m["epoch"] for m in curves[t.number]] == [1, 2, 3]
        elif t.state == TrialState.PRUNED:  # ASHA stopped it at a rung
            assert [m["epoch"] for m in curves[t.number]] in ([1], [1, 2], [1, 2, 3])


def test_a_long_outage_fails_the_study_with_the_reason(postgres_url: str) -> None:
    with flaky_proxy(postgres_url) as proxy:
        store = submit(postgres_url, spec("outage-long"))
        actor = start_runner("outage-long", proxy.url, db_retry_seconds=3)
        wait_until(lambda: store.curves("outage-long", "coarse"), 120, "a trial reported")
        proxy.cut()
        wait_until(lambda: progress(actor)["result"], 60, "the runner gives up")
        proxy.restore()  # in time for the runner to record why it gave up
        report = finish(actor, 240)
        stop_runner(actor)

    assert report["status"] == "failed"
    record = store.study("outage-long")
    assert record.status == "failed"
    assert record.message.startswith("the database failed for 3 s")
    # never half-written: coarse is not marked done, and every finished trial is whole
    assert next(s for s in record.stages if s.name == "coarse").status == "running"
    curves = store.curves("outage-long", "coarse")
    for t in trials(postgres_url, "outage-long", "coarse"):
        if t.state == TrialState.COMPLETE:
            assert [m["epoch"] for m in curves[t.number]] == [1, 2, 3]
        elif t.state == TrialState.PRUNED:  # ASHA stopped it at a rung
            assert [m["epoch"] for m in curves[t.number]] in ([1], [1, 2], [1, 2, 3])
