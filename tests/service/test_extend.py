"""Extending a finished study (`POST /api/studies/{id}/extend`, `stagetune extend`):
refine goes on from every trial it ran, confirm runs a new round, nothing recorded changes,
and what cannot be extended is refused with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from stagetune.service.cli._app import app
from stagetune.service.client import Client
from stagetune.studies.store import Store
from tests.service.server import Server

pytestmark = pytest.mark.slow  # two runs of a study through a server

OFF = {"enabled": False}
SPEC: dict[str, Any] = {
    "name": "extended", "task": {"dataset": "digits", "model": "mlp"},
    "space": {"lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
              "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
              "width": {"type": "int", "low": 8, "high": 32}},
    "stages": {"data_check": OFF, "baseline": OFF, "init_check": OFF, "overfit": OFF,
               "lr_probe": OFF, "refine": {"epochs": 3},
               "confirm": {"top": 1, "seeds": 1}},
    "budget": {"epochs": 30}, "resources": {"max_concurrent": 2},
}


def _trials(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every trial as recorded: number, state, parameters, value, curve, attributes."""
    return {stage: [(t.number, t.state.name, t.params, t.value, dict(t.intermediate_values),
                     t.user_attrs) for t in store.trials("extended", stage)]
            for stage in ("coarse", "refine", "confirm")}


def test_an_extended_study_goes_on_and_changes_nothing_recorded(open_server: Server,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    env = {"STAGETUNE_URL": open_server.url}
    submitted = CliRunner().invoke(app, ["submit", str(path)], env=env)
    assert submitted.exit_code == 0, submitted.output
    ran = CliRunner().invoke(app, ["status", "extended", "--watch", "--interval", "0.3"], env=env)
    assert ran.exit_code == 0, ran.output
    store = Store(open_server.db)
    before = _trials(store)
    with Client(open_server.url) as api:
        # an extension of nothing is refused, naming what is allowed
        reply = httpx.post(f"{open_server.url}/api/studies/extended/extend", json={"epochs": 0})
        assert reply.status_code == 422 and "greater than or equal to 1" in reply.text
        spent = api.study("extended").compute["epochs"]
    extended = CliRunner().invoke(app, ["extend", "extended", "--epochs", "20", "--watch",
                                        "--interval", "0.3"], env=env)
    assert extended.exit_code == 0, extended.output
    after = _trials(store)
    for stage, trials in before.items():  # nothing recorded changed
        assert after[stage][:len(trials)] == trials, stage
    assert len(after["coarse"]) == len(before["coarse"])  # coarse does not run again
    # refine went on in the same Optuna study: its new trials come after the old ones,
    # and its sampler saw them (the told-from-coarse trials and its own)
    new_refine = after["refine"][len(before["refine"]):]
    assert new_refine and min(t[0] for t in new_refine) > max(t[0] for t in before["refine"])
    # confirm ran a new round beside the first
    assert {t[5].get("round", 0) for t in after["confirm"]} == {0, 1}
    with Client(open_server.url) as api:
        study = api.study("extended")
        assert study.status == "completed"
        assert study.spec["budget"]["epochs"] == 50
        assert spent < study.compute["epochs"] <= 50 + 1e-6
        missing = httpx.post(f"{open_server.url}/api/studies/nothing/extend", json={"epochs": 5})
        assert missing.status_code == 404


def test_a_study_that_never_reached_refine_cannot_be_extended(open_server: Server,
                                                              tmp_path: Path) -> None:
    # lr 0: the overfit probe takes no step that changes a weight, and stops the study
    gated = {**SPEC, "name": "gated", "fixed": {"lr": 0},
             "space": {"width": {"type": "int", "low": 8, "high": 32}},
             "stages": {**SPEC["stages"], "overfit": {"steps": 10}}}
    with Client(open_server.url) as api:
        api.submit(gated)
    env = {"STAGETUNE_URL": open_server.url}
    watched = CliRunner().invoke(app, ["status", "gated", "--watch", "--interval", "0.3"], env=env)
    assert watched.exit_code == 3, watched.output
    refused = CliRunner().invoke(app, ["extend", "gated", "--epochs", "5"], env=env)
    assert refused.exit_code == 1
    assert "stopped before refine found a configuration" in " ".join(refused.stderr.split())
