"""A study warm-started from an earlier one on the same task (`warm_start_from`): its LR
probe is not run (the earlier ranges serve), its refine is told the earlier trials, and a
source that cannot serve is refused at submit, naming the field."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from stagetune.service.cli._app import app
from stagetune.service.client import Client
from stagetune.studies.store import Store
from tests.service.server import Server

pytestmark = pytest.mark.slow  # two studies through a server

OFF = {"enabled": False}
SPEC: dict[str, Any] = {
    "name": "cold", "task": {"dataset": "digits", "model": "mlp"},
    "space": {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
              "width": {"type": "int", "low": 8, "high": 32}},
    "stages": {"data_check": OFF, "baseline": OFF, "init_check": OFF, "overfit": OFF,
               "lr_probe": {"iterations": 40}, "refine": {"epochs": 3},
               "confirm": OFF},
    "budget": {"epochs": 30}, "resources": {"max_concurrent": 2},
}


def run(server: Server, spec: dict[str, Any]) -> None:
    with Client(server.url) as api:
        api.submit(spec)
    watched = CliRunner().invoke(app, ["status", spec["name"], "--watch", "--interval", "0.3"],
                                 env={"STAGETUNE_URL": server.url})
    assert watched.exit_code == 0, watched.output


def test_a_warm_started_study_starts_from_the_earlier_one(open_server: Server) -> None:
    run(open_server, SPEC)
    run(open_server, {**SPEC, "name": "warm", "seed": 1, "warm_start_from": "cold"})
    store = Store(open_server.db)
    cold, warm = store.study("cold"), store.study("warm")
    probes = {s.name: s for s in warm.stages}
    assert probes["lr_probe"].verdict == "skipped"
    assert "the LR ranges come from study cold" in probes["lr_probe"].message
    assert probes["lr_probe"].hand_on["lr_ranges"] == next(
        s for s in cold.stages if s.name == "lr_probe").hand_on["lr_ranges"]
    # every coarse and refine trial of the earlier study told to this refine, as observed
    earlier = len(store.trials("cold", "coarse")) + len(store.trials("cold", "refine"))
    assert probes["refine"].figures["told_from_earlier_study"] == earlier
    # refine's first proposal is the earlier study's best full trial
    first = min((t for t in store.trials("warm", "refine") if "continues" not in t.user_attrs),
                key=lambda t: t.number)
    assert first.user_attrs["drawn_from"] == "the best trial of study cold"
    # its own trials are still its own: the API lists no told trial
    with Client(open_server.url) as api:
        listed = list(api.all_trials("warm", stage="refine"))
        assert len(listed) == probes["refine"].figures["trials"]


@pytest.mark.parametrize(("source", "says"), [
    ("nowhere", "no study named 'nowhere' in this store"),
    ("cold-other-task", "tuned mlp on wine, this one mlp on digits"),
])
def test_a_source_that_cannot_serve_is_refused_at_submit(open_server: Server, source: str,
                                                         says: str) -> None:
    if source == "cold-other-task":
        run(open_server, {**SPEC, "name": source, "task": {"dataset": "wine", "model": "mlp"},
                          "stages": {**SPEC["stages"], "lr_probe": OFF, "refine": OFF}})
    reply = httpx.post(f"{open_server.url}/api/studies",
                       json={**SPEC, "name": f"from-{source}", "warm_start_from": source})
    assert reply.status_code == 422, reply.text
    problem = reply.json()["detail"][0]
    assert problem["loc"][-1] == "warm_start_from" and says in problem["msg"]
