"""How a study ends is the exit code of `stagetune status --watch` (and `resume --watch`):
3 when a gate stopped it, 4 when it was cancelled, 1 when it failed; and `resume` goes
through the service when given its URL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from stagetune.service.cli._app import app
from stagetune.service.client import Client
from tests.service.server import Server
from tests.studies.ray_support import wait_until

pytestmark = pytest.mark.slow  # studies run to each exit code through a server

OFF = {"enabled": False}
QUIET = {"data_check": OFF, "baseline": OFF, "init_check": OFF, "lr_probe": OFF,
         "refine": OFF, "confirm": OFF}


def spec(name: str, dataset: str = "digits", **stages: Any) -> dict[str, Any]:
    return {"name": name, "task": {"dataset": dataset, "model": "mlp"},
            "space": {"width": {"type": "int", "low": 8, "high": 16}},
            "stages": {**QUIET, "overfit": OFF, "coarse": {"trials": 2, "epochs": 1}, **stages},
            "resources": {"max_concurrent": 2}}


def cli(server: Server, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"STAGETUNE_URL": server.url})


def trials_said(server: Server, study: str) -> str:
    """Each trial's state and reason: what a failed assertion needs to say why."""
    with Client(server.url) as api:
        return "\n".join(f"trial {t.number} ({t.stage}): {t.state} {t.status}: {t.reason}"
                         for t in api.all_trials(study))


def submit(server: Server, tmp_path: Path, study: dict[str, Any]) -> None:
    path = tmp_path / f"{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study))
    submitted = cli(server, "submit", str(path))
    assert submitted.exit_code == 0, submitted.output
    assert f"submitted study {study['name']}" in submitted.stdout


def test_a_gate_that_stops_the_study_exits_3(open_server: Server, tmp_path: Path) -> None:
    # lr 0: the overfit probe takes no step that changes a weight, and fails
    gated = {**spec("cli-gated", overfit={"steps": 10}), "fixed": {"lr": 0}}
    submit(open_server, tmp_path, gated)
    watched = cli(open_server, "status", "cli-gated", "--watch", "--interval", "0.3",
                  "--format", "json")
    assert watched.exit_code == 3, watched.output
    study = json.loads(watched.stdout)
    assert study["status"] == "stopped" and study["message"].startswith("overfit:")
    table = cli(open_server, "status", "cli-gated", "--watch")
    assert table.exit_code == 3 and "stopped:" in table.stderr and "overfit" in table.stdout


def test_a_failed_study_exits_1_and_resumes_through_the_service(open_server: Server,
                                                                 tmp_path: Path) -> None:
    # a valid spec whose dataset's files are not in the data folder: it fails when loaded
    submit(open_server, tmp_path, spec("cli-failing", dataset="cifar10"))
    watched = cli(open_server, "status", "cli-failing", "--watch", "--interval", "0.3")
    assert watched.exit_code == 1, watched.output
    assert "failed: CIFAR10 not found" in " ".join(watched.stderr.split())
    # resumed through the service ($STAGETUNE_URL) and followed: it fails the same way
    again = cli(open_server, "resume", "cli-failing", "--watch", "--interval", "0.3",
                "--format", "yaml")
    assert again.exit_code == 1, again.output
    # the resume set it pending before answering: failed again means it ran again
    ended = yaml.safe_load(again.stdout)
    assert ended["status"] == "failed" and "CIFAR10 not found" in ended["message"]
    resumed = cli(open_server, "resume", "cli-failing", "--format", "json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["status"] == "pending"  # answered at once
    both = cli(open_server, "resume", "cli-failing", "--db", "sqlite:///x.db",
               "--url", open_server.url)
    assert both.exit_code == 2 and "not both" in both.stderr


def test_a_cancelled_study_exits_4(open_server: Server, tmp_path: Path) -> None:
    submit(open_server, tmp_path, spec("cli-long", coarse={"trials": 2, "epochs": 300}))
    with Client(open_server.url) as api:
        wait_until(lambda: api.trials("cli-long", state="running").total, 120,
                   "a trial runs")
    running = cli(open_server, "delete", "cli-long", "--yes")
    assert running.exit_code == 1 and "cancel it before deleting it" in running.stderr
    cancelled = cli(open_server, "cancel", "cli-long")
    assert cancelled.exit_code == 0 and "cli-long: cancelling" in cancelled.stdout
    watched = cli(open_server, "status", "cli-long", "--watch", "--interval", "0.3",
                  "--format", "json")
    assert watched.exit_code == 4, watched.output
    assert json.loads(watched.stdout)["status"] == "cancelled"
    assert cli(open_server, "cancel", "cli-long").exit_code == 1  # nothing to cancel: 409
    assert cli(open_server, "delete", "cli-long", "--yes").exit_code == 0


def test_weights_the_service_cannot_see_are_a_404_not_a_500(open_server: Server,
                                                            tmp_path: Path) -> None:
    # open_server joins the test process's Ray: its runners keep the winner's weights in
    # the test process's data folder, which the server does not share
    submit(open_server, tmp_path, spec("cli-elsewhere", confirm={"top": 1, "seeds": 1,
                                                                 "epochs": 1}))
    done = cli(open_server, "status", "cli-elsewhere", "--watch", "--interval", "0.3")
    assert done.exit_code == 0, done.output + trials_said(open_server, "cli-elsewhere")
    reply = httpx.get(f"{open_server.url}/api/studies/cli-elsewhere/model")
    assert reply.status_code == 404 and "share STAGETUNE_DATA_DIR" in reply.json()["detail"]
    assert str(open_server.data_dir) not in reply.text
    download = cli(open_server, "model", "cli-elsewhere", "-o", str(tmp_path / "model.zip"))
    assert download.exit_code == 1 and "share STAGETUNE_DATA_DIR" in download.stderr
    assert not (tmp_path / "model.zip").exists()
