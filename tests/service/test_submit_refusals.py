"""Submit refuses what cannot run, naming the field and what is allowed, or accepts it and
says plainly why it waits; a study being cancelled cannot be deleted yet. Against real
`stagetune serve` processes on the module's 2-CPU Ray: one as installed, one told that the
cluster may grow."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stagetune.service.client import ApiError, Client
from tests.service.server import STAGETUNE, Server
from tests.service.test_api import long_study, wait_for_status
from tests.studies.ray_support import NO_PROBES, digits_spec, wait_until

WAITING = "waiting: needs 256 CPUs per trial; the largest node has 2"


@pytest.fixture(scope="module")
def growing_server(tmp_path_factory: pytest.TempPathFactory, ray_local: str) -> Iterator[Server]:
    """A server on the same 2-CPU Ray that is told nodes may join later."""
    tmp = tmp_path_factory.mktemp("growing")
    server = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data", ray_address=ray_local,
                    env={"STAGETUNE_CLUSTER_MAY_GROW": "true"}).start()
    yield server
    server.stop()


def small(name: str, **extra: Any) -> dict[str, Any]:
    return {**digits_spec(name, resources={"max_concurrent": 1},
                          stages={**NO_PROBES, "coarse": {"trials": 2, "epochs": 1},
                                  "refine": {"enabled": False}, "confirm": {"enabled": False}}),
            **extra}


def refused(server: Server, spec: dict[str, Any]) -> list[dict[str, Any]]:
    answer = httpx.post(f"{server.url}/api/studies", json=spec)
    assert answer.status_code == 422, answer.text
    assert spec["name"] not in httpx.get(f"{server.url}/api/studies").text  # nothing stored
    return answer.json()["detail"]  # type: ignore[no-any-return]


def test_an_image_folder_outside_the_data_folder_is_a_422(open_server: Server) -> None:
    for path in ("../../etc", "/etc", "no-such-folder"):
        spec = small("outside-data", task={"dataset": "image_folder", "model": "convnet",
                                           "dataset_options": {"path": path}})
        (problem,) = refused(open_server, spec)
        assert problem["loc"] == ["body", "task", "dataset_options", "path"]
        assert problem["msg"].startswith(f"image_folder: no folder {path!r} in the data folder;")
        assert str(open_server.data_dir) not in problem["msg"]


def test_a_budget_below_the_plans_minimum_is_a_422_that_names_it(open_server: Server) -> None:
    (problem,) = refused(open_server, {**small("tiny-budget"), "stages": {},
                                       "budget": {"epochs": 5}})
    assert problem["loc"] == ["body", "budget", "epochs"]
    assert "give budget.epochs at least 19," in problem["msg"]
    (unknown,) = refused(open_server, {**small("budget-typo"), "budget": {"epochs": 50, "trials": 3}})
    assert unknown["loc"] == ["body", "budget", "trials"]
    assert unknown["msg"] == "unknown field; allowed here: epochs, seconds"


@pytest.mark.parametrize("resources, field, words", [
    ({"cpus_per_trial": 256}, "cpus_per_trial", "needs 256 CPUs per trial; the largest node has 2"),
    ({"gpus_per_trial": 1}, "gpus_per_trial", "needs 1 GPUs per trial; no node has any"),
    ({"custom": {"a100": 1}}, "custom", "needs 1 of the custom resource 'a100' per trial; no node "
                                        "has it"),
])
def test_resources_no_node_can_provide_are_a_422(open_server: Server, resources: dict[str, Any],
                                                 field: str, words: str) -> None:
    (problem,) = refused(open_server, small("too-big", resources=resources))
    assert problem["loc"][:3] == ["body", "resources", field]
    assert problem["msg"].startswith(f"{words}: no trial could ever start;")
    assert "STAGETUNE_CLUSTER_MAY_GROW=true" in problem["msg"]


@pytest.mark.slow
def test_on_a_cluster_that_may_grow_the_study_says_what_it_waits_for(growing_server: Server
                                                                     ) -> None:
    with Client(growing_server.url) as api:
        assert api.submit(small("needs-256", resources={"cpus_per_trial": 256})).status == "pending"
        study = wait_until(lambda: (s := api.study("needs-256")).message == WAITING and s, 120,
                           "the study says what it waits for")
        assert study.status == "running"
        shown = subprocess.run([STAGETUNE, "status", "needs-256", "--url", growing_server.url],
                               capture_output=True, text=True, timeout=60)
        assert WAITING in " ".join((shown.stdout + shown.stderr).split()), shown
        listed = api.studies().items
        assert [s.message for s in listed if s.id == "needs-256"] == [WAITING]
        api.cancel("needs-256")
        assert wait_for_status(api, "needs-256", ("cancelled",), 60).message \
            == "cancelled on request; resume to go on"
        assert api.trials("needs-256").total == 0
        api.delete("needs-256")


@pytest.mark.slow
def test_a_cancelling_study_cannot_be_deleted_until_it_is_cancelled(open_server: Server) -> None:
    with Client(open_server.url) as api:
        api.submit(long_study("delete-cancelling", trials=2))
        wait_until(lambda: api.trials("delete-cancelling", state="running").total, 120,
                   "a trial is running")
        assert api.cancel("delete-cancelling").status == "cancelling"
        with pytest.raises(ApiError) as refusal:  # its runner still stops its trials
            api.delete("delete-cancelling")
        assert refusal.value.status == 409
        assert "is cancelling; delete it once it is cancelled" in str(refusal.value)
        wait_for_status(api, "delete-cancelling", ("cancelled",), 60)
        api.delete("delete-cancelling")
        assert httpx.get(f"{open_server.url}/api/studies/delete-cancelling").status_code == 404


@pytest.mark.slow
def test_nothing_was_left_behind(open_server: Server, growing_server: Server) -> None:
    for server in (open_server, growing_server):
        assert "Traceback" not in server.log.read_text(), server.log.read_text()
        assert Path(server.log).exists()
