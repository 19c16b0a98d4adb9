"""The queue in front of the runners, against a real `stagetune serve` with tokens on the
module's 2-CPU Ray: one study runs at a time (STAGETUNE_MAX_RUNNING_STUDIES=1), the others
wait in the order they were queued, with no runner process and their place in the queue
in their message; each token may keep three studies pending (a fourth is a 429)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stagetune.service.client import Client
from tests.service.server import STAGETUNE, Server
from tests.service.test_api import long_study, wait_for_status
from tests.service.test_supervisor import no_runner_left, runners
from tests.studies.ray_support import NO_PROBES, wait_until

pytestmark = pytest.mark.slow  # queued studies run one at a time through a server

TOKENS = ("tok-a", "tok-b", "tok-c")
OFF = {"enabled": False}
ENDED = ("completed", "stopped", "failed", "cancelled")


def tiny_study(name: str) -> dict[str, Any]:
    """A study of a few seconds: the data check and two 1-epoch trials of an MLP."""
    return {"name": name, "task": {"dataset": "digits", "model": "mlp"},
            "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
            "stages": {**NO_PROBES, "init_check": OFF, "coarse": {"trials": 2, "epochs": 1},
                       "refine": OFF, "confirm": OFF},
            "resources": {"max_concurrent": 2}}


def queued(place: int, of: int) -> str:
    return f"queued: 1 study runs at once (STAGETUNE_MAX_RUNNING_STUDIES); position {place} of {of}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ray_local: str) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("queue")
    server = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data", tokens=",".join(TOKENS),
                    ray_address=ray_local, env={"STAGETUNE_MAX_RUNNING_STUDIES": "1",
                                                "STAGETUNE_MAX_PENDING_PER_TOKEN": "3"}).start()
    yield server
    server.stop()


def clean_up(api: Client, names: list[str]) -> None:
    """Cancel and delete the test's studies; wait until no runner is left."""
    for name in names:
        if api.study(name).status in ("pending", "running"):
            api.cancel(name)
    for name in names:
        wait_for_status(api, name, ENDED, 60)
        api.delete(name)
    wait_until(no_runner_left, 60, "every runner is stopped")


@pytest.mark.slow
def test_studies_beyond_the_limit_wait_their_turn_and_all_finish_in_order(server: Server) -> None:
    names = [f"turn-{i}" for i in range(3)]
    seen: dict[str, list[str]] = {name: [] for name in names}  # each study's messages, in order
    began: dict[str, float] = {}
    ended: dict[str, float] = {}
    with Client(server.url, "tok-a") as api:
        for name in names:
            assert api.submit(tiny_study(name)).status == "pending"
        deadline = time.monotonic() + 240
        while len(ended) < len(names) and time.monotonic() < deadline:
            # a runner seen before the snapshot is for a study let through: its note came first
            alive = {a["Name"].removeprefix("runner:").split("@")[0] for a in runners()}
            items = {s.id: s for s in api.studies(limit=500).items}  # one snapshot
            assert sum(s.status == "running" for s in items.values()) <= 1, items
            waiting = {n for n, s in items.items() if s.message.startswith("queued:")}
            assert not alive & waiting, (alive, items)  # no process for a queued study
            for name in names:
                study = items[name]
                if study.status == "pending" and study.message not in seen[name][-1:]:
                    seen[name].append(study.message)
                if study.status != "pending":
                    began.setdefault(name, time.monotonic())
                if study.status in ENDED:
                    ended.setdefault(name, time.monotonic())
            time.sleep(0.1)
        finals = [api.study(name) for name in names]
        assert [s.status for s in finals] == ["completed"] * 3, [s.message for s in finals]
        assert sorted(names, key=began.__getitem__) == names, began
        assert sorted(names, key=ended.__getitem__) == names, ended
        assert queued(2, 2) in seen["turn-2"] and queued(1, 1) in seen["turn-2"], seen
        assert queued(1, 2) in seen["turn-1"] or queued(1, 1) in seen["turn-1"], seen
        clean_up(api, names)


def test_queued_studies_cancel_resume_and_delete_and_show_their_place(server: Server) -> None:
    names = ["holder", "q-1", "q-2", "q-3"]
    with Client(server.url, "tok-c") as api:
        api.submit(long_study("holder"))
        wait_for_status(api, "holder", ("running",), 60)
        for name in names[1:]:
            api.submit(tiny_study(name))
        wait_until(lambda: api.study("q-3").message == queued(3, 3), 30, "q-3 is third")
        assert [api.study(n).message for n in names[1:]] == [queued(1, 3), queued(2, 3),
                                                              queued(3, 3)]
        assert len(runners()) == 1  # the holder's only
        # the dashboard and `stagetune status` say it too
        page = httpx.get(f"{server.url}/studies/q-2", headers={"Authorization": "Bearer tok-c"})
        assert page.status_code == 200 and queued(2, 3) in page.text
        shown = subprocess.run([STAGETUNE, "status", "q-2", "--url", server.url, "--token", "tok-c"],
                               capture_output=True, text=True, timeout=60,
                               env={**os.environ, "COLUMNS": "200"})
        assert f"pending: {queued(2, 3)}" in shown.stdout, shown

        # a queued study is deleted once cancelled, which it is at once; those behind move up
        refused = httpx.delete(f"{server.url}/api/studies/q-2",
                               headers={"Authorization": "Bearer tok-c"})
        assert refused.status_code == 409 and "cancel it" in refused.json()["detail"]
        asked = time.monotonic()
        assert api.cancel("q-2").status == "cancelling"
        wait_for_status(api, "q-2", ("cancelled",), 10)
        assert time.monotonic() - asked < 5
        wait_until(lambda: api.study("q-3").message == queued(2, 2), 10, "q-3 moves up")
        api.delete("q-2")
        # a resumed study goes to the back of the queue
        api.cancel("q-1")
        wait_for_status(api, "q-1", ("cancelled",), 10)
        assert api.resume("q-1").status == "pending"
        wait_until(lambda: api.study("q-1").message == queued(2, 2), 10, "q-1 is last")
        assert api.study("q-3").message == queued(1, 2)
        assert len(runners()) == 1
        clean_up(api, ["holder", "q-1", "q-3"])


def test_a_token_with_too_many_pending_studies_gets_a_429_that_says_so(server: Server) -> None:
    def post(token: str, spec: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{server.url}/api/studies", json=spec, timeout=30,
                          headers={"Authorization": f"Bearer {token}"})

    with Client(server.url, "tok-c") as holder, Client(server.url, "tok-b") as api, \
            Client(server.url, "tok-a") as other:
        holder.submit(long_study("holder-429"))
        wait_for_status(holder, "holder-429", ("running",), 60)
        for i in range(3):
            assert post("tok-b", tiny_study(f"b-{i}")).status_code == 201
        answer = post("tok-b", tiny_study("b-3"))
        assert answer.status_code == 429, answer.text
        assert answer.json() == {"detail": (
            "this token has 3 studies pending, the most allowed "
            "(STAGETUNE_MAX_PENDING_PER_TOKEN=3); submit or resume more once some have "
            "started, or cancel some")}
        assert httpx.get(f"{server.url}/api/studies/b-3", headers={
            "Authorization": "Bearer tok-b"}).status_code == 404  # nothing was stored
        assert other.submit(tiny_study("a-0")).status == "pending"  # another token's count
        # a cancelled study frees its place; resuming it takes one again
        api.cancel("b-0")
        wait_for_status(api, "b-0", ("cancelled",), 10)
        assert post("tok-b", tiny_study("b-3")).status_code == 201
        again = httpx.post(f"{server.url}/api/studies/b-0/resume",
                           headers={"Authorization": "Bearer tok-b"})
        assert again.status_code == 429 and "STAGETUNE_MAX_PENDING_PER_TOKEN" in again.text
        assert api.study("b-0").status == "cancelled"
        clean_up(api, ["holder-429", "b-0", "b-1", "b-2", "b-3", "a-0"])
