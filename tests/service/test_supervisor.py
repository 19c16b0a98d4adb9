"""The supervisor against a real `stagetune serve`: asynchronous cancel, deleted studies,
runners that stop when their study ends, studies that fail before their first stage, and
runners that start concurrently. One server for the module, on the module's Ray."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from stagetune.service.client import Client
from tests.service.server import Server
from tests.service.test_api import long_study, wait_for_status
from tests.studies.ray_support import wait_until

pytestmark = pytest.mark.slow  # whole studies through a server, runners started and stopped

TICKS = 3 * 2.0  # three of the supervisor's ticks


def runners() -> list[dict[str, Any]]:
    """The runner actors that are alive (or coming up) on the cluster, with live processes."""
    return [a for a in ray._private.state.actors().values()
            if a["ActorClassName"] == "StudyRunner" and a["State"] != "DEAD"]


def runner_processes() -> list[int]:
    pids = {a["Pid"] for a in ray._private.state.actors().values()
            if a["ActorClassName"] == "StudyRunner" and a["Pid"]}
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def no_runner_left() -> bool:
    return not runners() and not runner_processes()


def reconcile_failures(server: Server) -> int:
    return server.log.read_text().count("reconcile failed")


def test_a_cancelled_pending_study_stays_cancelled(open_server: Server) -> None:
    with Client(open_server.url) as api:
        api.submit(long_study("cancel-pending"))
        answer = httpx.post(f"{open_server.url}/api/studies/cancel-pending/cancel")
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "cancelling"
        study = wait_for_status(api, "cancel-pending", ("cancelled",), 60)
        deadline = time.monotonic() + TICKS
        while time.monotonic() < deadline:  # the supervisor does not take it up again
            study = api.study("cancel-pending")
            assert study.status == "cancelled", study
            time.sleep(0.3)
        assert study.message == "cancelled on request; resume to go on"
        assert api.trials("cancel-pending").total == 0
        assert all(s.status == "pending" for s in study.stages)  # no stage began
        again = httpx.post(f"{open_server.url}/api/studies/cancel-pending/cancel")
        assert again.status_code == 409 and "nothing to cancel" in again.text
        wait_until(no_runner_left, 60, "its runner is stopped")
        api.delete("cancel-pending")


def test_deleted_studies_leave_no_runner_and_break_no_tick(open_server: Server) -> None:
    with Client(open_server.url) as api:
        # deleted while its runner is still coming up: submitted, cancelled at once
        api.submit(long_study("gone-early"))
        api.cancel("gone-early")
        wait_for_status(api, "gone-early", ("cancelled",), 60)
        api.delete("gone-early")
        # deleted while the supervisor holds its runner, which had trials running
        api.submit(long_study("gone-late"))
        wait_until(lambda: api.trials("gone-late", state="running").total, 120,
                   "a trial of gone-late runs")
        assert api.cancel("gone-late").status == "cancelling"
        wait_for_status(api, "gone-late", ("cancelled",), 60)
        api.delete("gone-late")
        wait_until(no_runner_left, 60, "every runner is stopped and its process gone")
        # later studies still run, and their runners are stopped once they end (two
        # 1-epoch trials: its length tells nothing here)
        api.submit(long_study("after-deletes", trials=2, epochs=1))
        study = wait_for_status(api, "after-deletes", ("completed", "stopped", "failed"), 300)
        assert study.status == "completed", study.message
        wait_until(no_runner_left, 60, "the finished study's runner is stopped")
        assert api.study("after-deletes").trials["waiting"] == 0
        api.delete("after-deletes")
    assert reconcile_failures(open_server) == 0, open_server.log.read_text()


def test_a_study_that_fails_before_its_first_stage_says_why(open_server: Server) -> None:
    spec = {"name": "no-cifar", "task": {"dataset": "cifar10", "model": "convnet"},
            "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}}
    with Client(open_server.url) as api:
        api.submit(spec)
        study = wait_for_status(api, "no-cifar", ("failed", "completed"), 60)
        assert study.status == "failed" and "CIFAR10 not found" in study.message, study
        wait_until(no_runner_left, 60, "its runner is stopped")
        time.sleep(TICKS)  # it is not restarted
        assert api.study("no-cifar").status == "failed" and no_runner_left()
        api.delete("no-cifar")
    log = open_server.log.read_text()
    assert reconcile_failures(open_server) == 0 and log.count("did not start") == 0, log


def test_runners_of_studies_submitted_together_start_together(tmp_path: Path,
                                                               ray_local: str) -> None:
    # three at once on the 2-CPU Ray: a server of its own, whose queue lets all three run
    server = Server(f"sqlite:///{tmp_path / 'together.db'}", tmp_path / "data",
                    ray_address=ray_local, env={"STAGETUNE_MAX_RUNNING_STUDIES": "3"}).start()
    try:
        start_together(server)
    finally:
        server.stop()


def start_together(server: Server) -> None:
    names = [f"together-{i}" for i in range(3)]
    with Client(server.url) as api:
        submitted = time.monotonic()
        for name in names:
            api.submit(long_study(name, trials=2, epochs=30))
        running: dict[str, float] = {}

        def all_running() -> bool:
            for item in api.studies(status="running", limit=500).items:
                running.setdefault(item.id, time.monotonic() - submitted)
            return set(names) <= set(running)

        wait_until(all_running, 120, "all three studies run")
        first, last = min(running.values()), max(running.values())
        # Started one at a time, the third would run some three runner start-ups after the
        # submit. Started together, Ray brings up as many worker processes at once as the
        # cluster has CPUs (two here), so the third follows within about one more.
        assert last < max(2.4 * first, first + 10), running
        for name in names:
            assert api.cancel(name).status == "cancelling"
        for name in names:
            wait_for_status(api, name, ("cancelled",), 60)
            api.delete(name)
        wait_until(no_runner_left, 60, "every runner is stopped")


def test_a_restarted_service_stops_the_runners_its_predecessor_left(
        tmp_path: Path, ray_local: str) -> None:
    """Runners are detached: with the service down, a study on a shared cluster runs on
    to its end and its runner stays. The next service finds it by name and stops it."""
    from stagetune.studies.store import Store

    db = f"sqlite:///{tmp_path / 'restart.db'}"
    server = Server(db, tmp_path / "data", ray_address=ray_local).start()
    try:
        with Client(server.url) as api:
            # long enough to be running still when the service is down: a study that
            # ends while the service shuts down has its runner stopped by that service
            api.submit(long_study("outlives", trials=2, epochs=15))
            wait_for_status(api, "outlives", ("running",), 120)
        server.stop()
        store = Store(db)
        wait_until(lambda: store.study("outlives").status == "completed", 180,
                   "the study completes with no service")
        assert len(runners()) == 1  # nobody has stopped it yet
        server.start()
        wait_until(no_runner_left, 60, "the new service stopped the old runner")
    finally:
        server.stop()
