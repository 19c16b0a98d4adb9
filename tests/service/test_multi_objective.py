"""A study of two objectives over REST (`task.objectives: [val_accuracy, params]`): refine and
confirm keep a front, the API returns it, the dashboard draws it, and the weights of any
confirmed configuration on it can be downloaded."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from stagetune.service.cli._app import app
from stagetune.service.client import Client
from tests.service.server import Server

pytestmark = pytest.mark.slow  # a study through a server

OFF = {"enabled": False}
SPEC: dict[str, Any] = {
    "name": "accuracy-vs-size",
    "task": {"dataset": "digits", "model": "mlp", "objectives": ["val_accuracy", "params"]},
    "space": {"lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
              "width": {"type": "int", "low": 4, "high": 128, "log": True}},
    "stages": {"data_check": OFF, "baseline": OFF, "init_check": OFF, "overfit": OFF,
               "lr_probe": OFF, "refine": {"epochs": 3}, "confirm": {"top": 3, "seeds": 2}},
    "budget": {"epochs": 60}, "resources": {"max_concurrent": 2},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a Ray of its own, whose workers keep weights in its data folder (on
    the shared test Ray they would land in another, and the download would be a 404)."""
    tmp = tmp_path_factory.mktemp("front")
    started = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data").start()
    yield started
    started.stop()


def beats(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether point `a` is at least as good as `b` on both objectives and better on one."""
    pairs = [(a["val_accuracy"], b["val_accuracy"]), (-a["params"], -b["params"])]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def test_a_study_of_two_objectives_keeps_a_front_the_api_returns(server: Server,
                                                                  tmp_path: Path) -> None:
    with Client(server.url) as api:
        api.submit(SPEC)
    watched = CliRunner().invoke(app, ["status", SPEC["name"], "--watch", "--interval", "0.3"],
                                 env={"STAGETUNE_URL": server.url})
    assert watched.exit_code == 0, watched.output
    with Client(server.url) as api:
        front = api.front(SPEC["name"])
        trials = list(api.all_trials(SPEC["name"], stage="refine"))
        assert [(o.name, o.direction) for o in front.objectives] == [
            ("val_accuracy", "maximize"), ("params", "minimize")]
        # the front is every completed refine trial that no other beats, best accuracy first
        points = {t.stage_number: t.objectives for t in trials
                  if t.state == "complete" and t.objectives}
        on = {p.trial for p in front.refine}
        assert len(on) >= 2 and on <= set(points)
        for number, point in points.items():
            assert (number in on) == (not any(beats(q, point) for q in points.values())), number
        accuracies = [p.values["val_accuracy"] for p in front.refine]
        assert accuracies == sorted(accuracies, reverse=True)
        # each trial's params is its model's parameter count
        assert all(points[p.trial]["params"] == t.parameters for p in front.refine
                   for t in trials if t.stage_number == p.trial)
        # confirm's front: means over seeds, and the weights of each configuration on it
        assert front.confirmed and all(c.seeds >= 1 for c in front.confirmed)
        chosen = front.confirmed[-1]
        archive = zipfile.ZipFile(io.BytesIO(api.model(SPEC["name"], config=chosen.config)))
        assert json.loads(archive.read("model.json"))["params"] == chosen.params
        assert archive.read("weights.pt")
        figure = api.plot(SPEC["name"], "pareto_front")
        assert figure["data"] and "front" in figure["layout"]["title"]["text"]
    # the same from the command line: the front as a table, and the picked model's zip
    env = {"STAGETUNE_URL": server.url}
    shown = CliRunner().invoke(app, ["front", SPEC["name"]], env=env)
    assert shown.exit_code == 0 and "confirmed front" in shown.output, shown.output
    listed = CliRunner().invoke(app, ["front", SPEC["name"], "--json"], env=env)
    assert json.loads(listed.output)["confirmed"][-1]["config"] == chosen.config
    zipped = CliRunner().invoke(app, ["model", SPEC["name"], "--config", str(chosen.config),
                                      "-o", str(tmp_path / "picked.zip")], env=env)
    assert zipped.exit_code == 0, zipped.output
    picked = zipfile.ZipFile(tmp_path / "picked.zip")
    assert json.loads(picked.read("model.json"))["params"] == chosen.params
    off_front = httpx.get(f"{server.url}/api/studies/{SPEC['name']}/model",
                          params={"config": 99})
    assert off_front.status_code == 404 and "not on study" in off_front.text


def test_a_front_of_one_objective_and_a_measure_first_are_refused(server: Server) -> None:
    measure_first = {**SPEC, "name": "size-first",
                     "task": {**SPEC["task"], "objectives": ["params", "val_accuracy"]}}
    reply = httpx.post(f"{server.url}/api/studies", json=measure_first)
    assert reply.status_code == 422, reply.text
    problem = reply.json()["detail"][0]
    assert problem["loc"][-1] == "objectives" and "cannot come first" in problem["msg"]
    unknown = {**SPEC, "name": "unknown-measure",
               "task": {**SPEC["task"], "objectives": ["val_accuracy", "latency_ms"]}}
    reply = httpx.post(f"{server.url}/api/studies", json=unknown)
    assert reply.status_code == 422 and "params, epoch_seconds" in reply.text
    with Client(server.url) as api:  # before refine: the front so far, from its trials
        api.submit({**SPEC, "name": "just-submitted"})
        early = api.front("just-submitted")
        api.cancel("just-submitted")
    assert [o.direction for o in early.objectives] == ["maximize", "minimize"]
    assert early.refine == [] and early.confirmed == [] and not early.note
    single = {**SPEC, "name": "one-objective", "task": {"dataset": "digits", "model": "mlp"},
              "stages": {**SPEC["stages"], "refine": OFF, "confirm": OFF}}
    with Client(server.url) as api:
        api.submit(single)
    reply = httpx.get(f"{server.url}/api/studies/one-objective/front")
    assert reply.status_code == 409 and "task.objectives" in reply.json()["detail"]
