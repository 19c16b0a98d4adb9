"""The REST API against real servers (uvicorn subprocesses with their own local Ray)."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from stagetune.service.client import ApiError, Client
from stagetune.service.schemas import StudyDetail
from tests.service.server import Server
from tests.studies.ray_support import NO_PROBES, digits_spec, wait_until


def quick_study(name: str) -> dict[str, Any]:
    return digits_spec(name, resources={"max_concurrent": 2},
                       stages={"overfit": {"enabled": False}, "lr_probe": {"enabled": False},
                               "coarse": {"trials": 4, "epochs": 1},
                               "refine": {"trials": 3, "epochs": 2, "warm_start": 2},
                               "confirm": {"top": 1, "seeds": 2, "epochs": 2}})


def long_study(name: str, trials: int = 4, epochs: int = 60) -> dict[str, Any]:
    return digits_spec(name, resources={"max_concurrent": 2},
                       stages={**NO_PROBES, "coarse": {"trials": trials, "epochs": epochs},
                               "refine": {"enabled": False}, "confirm": {"enabled": False}})


def wait_for_status(api: Client, study: str, statuses: tuple[str, ...], timeout: float
                    ) -> StudyDetail:
    found: StudyDetail = wait_until(lambda: (s := api.study(study)).status in statuses and s,
                                    timeout, f"study {study} is {' or '.join(statuses)}")
    return found


@pytest.mark.slow
def test_a_digits_study_submitted_over_http_completes(store_url: str, tmp_path: Path) -> None:
    server = Server(store_url, tmp_path / "data").start()
    try:
        with Client(server.url) as api:
            created = api.submit(quick_study("http-digits"))
            assert created.id == "http-digits" and created.status == "pending"
            study = wait_for_status(api, "http-digits", ("completed", "stopped", "failed"), 240)
            assert study.status == "completed", study.message
            assert [s.verdict for s in study.stages] != [None] * 8
            assert study.best and study.best.value and study.best.value >= 0.9
            assert study.baseline and study.baseline > 0.5
            assert study.compute["epochs"] > 0
            assert (study.stages[5].trials or {})["complete"] == 4  # coarse

            trials = api.trials("http-digits", limit=500)
            assert trials.total == 4 + 3 + 2
            assert [t.number for t in trials.items] == list(range(9))
            # times are UTC with their offset (a documented date-time), trials' as well
            started = [t.started_at for t in trials.items]
            assert all(m is not None and m.utcoffset() == timedelta(0) for m in started)
            assert all(m and abs(datetime.now(UTC) - m) < timedelta(hours=1) for m in started)
            refine = api.trials("http-digits", stage="refine")
            assert {t.stage for t in refine.items} == {"refine"} and refine.total == 3
            # successive halving and continuation are visible: coarse's one rung, and the
            # refine trials that picked up coarse survivors after their epoch 1
            coarse = study.stages[5]
            assert (coarse.planned or {})["sizes"]["rungs"] == [1]
            assert coarse.rungs == [{"epoch": 1, "reached": 4, "promoted": None, "finished": 4}]
            assert all(t.rungs == [0] for t in trials.items[:4])
            continued = [t for t in refine.items if t.continues is not None]
            assert len(continued) == 2 and all(t.started_after == 1 for t in continued)
            curve = api.trial("http-digits", continued[0].number).curves
            assert [m["epoch"] for m in curve] == [2]
            assert study.budget is None and all(t.parameters for t in trials.items[:4])
            one = api.trial("http-digits", 8)
            assert one.stage == "confirm" and [m["epoch"] for m in one.curves] == [1, 2]

            archive = zipfile.ZipFile(io.BytesIO(api.model("http-digits")))
            rebuild = json.loads(archive.read("model.json"))
            assert rebuild["task"]["dataset"] == "digits" and "width" in rebuild["params"]
            state = torch.load(io.BytesIO(archive.read("weights.pt")))
            assert all(isinstance(v, torch.Tensor) for v in state.values())

            api.delete("http-digits")
            with pytest.raises(ApiError) as missing:
                api.study("http-digits")
            assert missing.value.status == 404
    finally:
        server.stop()


@pytest.mark.slow
def test_every_error_names_the_problem(open_server: Server) -> None:
    url = open_server.url
    bad = httpx.post(f"{url}/api/studies", json={"name": "bad", "task": {"dataset": "digts",
                                                                         "model": "convnet"}})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "task", "dataset"]
    assert "registered: " in bad.json()["detail"][0]["msg"]
    yaml_error = httpx.post(f"{url}/api/studies", content=b"name: [",
                            headers={"Content-Type": "application/yaml"})
    assert yaml_error.status_code == 422 and "not valid YAML" in yaml_error.text
    assert httpx.post(f"{url}/api/studies", content=b"x",
                      headers={"Content-Type": "text/plain"}).status_code == 415
    assert httpx.post(f"{url}/api/studies", content=b"{" + b" " * 1_100_000 + b"}",
                      headers={"Content-Type": "application/json"}).status_code == 413
    assert httpx.get(f"{url}/api/studies", params={"status": "bogus"}).status_code == 422
    assert httpx.get(f"{url}/api/studies", params={"limit": 0}).status_code == 422
    for method, path in [("GET", "/nope"), ("POST", "/nope/cancel"), ("POST", "/nope/resume"),
                         ("DELETE", "/nope"), ("GET", "/nope/trials"), ("GET", "/nope/trials/0"),
                         ("GET", "/nope/model")]:
        response = httpx.request(method, f"{url}/api/studies{path}")
        assert response.status_code == 404, (method, path)
        assert "no study named 'nope'" in response.json()["detail"]

    with Client(url) as api:
        api.submit(long_study("errors-running"))
        for call, status in [(lambda: api.submit(long_study("errors-running")), 409),
                             (lambda: api.delete("errors-running"), 409),
                             (lambda: api.resume("errors-running"), 409),
                             (lambda: api.trial("errors-running", 99), 404),
                             (lambda: api.model("errors-running"), 404)]:
            with pytest.raises(ApiError) as error:
                call()
            assert error.value.status == status, error.value
        wait_until(lambda: api.trials("errors-running", state="running").total, 120,
                   "a trial is running")
        assert api.cancel("errors-running").status == "cancelling"  # answered at once
        wait_for_status(api, "errors-running", ("cancelled",), 60)
        with pytest.raises(ApiError) as again:
            api.cancel("errors-running")
        assert again.value.status == 409 and "nothing to cancel" in str(again.value)
        cancelled = api.trials("errors-running", state="failed").items
        assert cancelled and {t.status for t in cancelled} == {"cancelled"}
        api.delete("errors-running")
    assert "listening on 127.0.0.1 only" in open_server.log.read_text()


def test_tokens_are_enforced_when_set(tmp_path: Path, ray_local: str) -> None:
    server = Server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "data", tokens="alpha, beta",
                    ray_address=ray_local).start()
    try:
        anonymous = httpx.get(f"{server.url}/api/studies")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        wrong = httpx.get(f"{server.url}/api/registry", headers={"Authorization": "Bearer gamma"})
        assert wrong.status_code == 401
        assert httpx.post(f"{server.url}/api/studies", json={}).status_code == 401
        with Client(server.url, token="beta") as api:
            assert api.studies().total == 0
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # health stays open

        # the pages send a browser to /login; the token it logs in with rides in a cookie
        page = httpx.get(f"{server.url}/studies/any")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/studies/any"
        assert httpx.post(f"{server.url}/login", json={"token": "gamma"}).status_code == 401
        login = httpx.post(f"{server.url}/login", json={"token": "alpha"})
        assert login.status_code == 204 and "httponly" in login.headers["set-cookie"].lower()
        with httpx.Client(base_url=server.url, cookies=login.cookies) as browser:
            assert browser.get("/").status_code == 200
            assert browser.get("/api/studies").json()["total"] == 0
            assert browser.get("/api/studies/any/plots/timeline").status_code == 404
    finally:
        server.stop()


@pytest.mark.slow
def test_a_server_restarted_mid_study_finishes_it(tmp_path: Path) -> None:
    server = Server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "data").start()
    try:
        with Client(server.url) as api:
            api.submit(long_study("restart-me", trials=5, epochs=2))
            wait_until(lambda: api.trials("restart-me", state="complete").total >= 2, 120,
                       "two trials have finished")
            before = {t.number: t for t in api.trials("restart-me", state="complete").items}
        server.stop()
        server.start()
        with Client(server.url) as api:
            study = wait_for_status(api, "restart-me", ("completed", "stopped", "failed"), 180)
            assert study.status == "completed", study.message
            after = api.trials("restart-me", limit=500).items
        numbers = [t.stage_number for t in after]
        assert sorted(numbers) == list(range(len(numbers)))
        assert sum(t.state == "complete" for t in after) >= 2
        for number, trial in before.items():  # finished before the restart: untouched
            assert after[number].finished_at == trial.finished_at
        for trial in after:  # those the restart cut off say so
            assert trial.state != "failed" or trial.reason, trial
    finally:
        server.stop()
