"""/metrics: scraped from a real `stagetune serve` while a study runs on the module's Ray,
the request series' labels, and the token a scrape needs; and the Ray dashboard opt-in."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from stagetune.service.app import create_app
from stagetune.service.client import Client
from stagetune.service.settings import Settings
from tests.service.server import STAGETUNE, Server
from tests.service.test_api import wait_for_status
from tests.studies.ray_support import NO_PROBES, digits_spec

SEARCH_ONLY = {"data_check": {"enabled": False}, "init_check": {"enabled": False}}


def scrape(url: str, token: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


@pytest.mark.slow
def test_running_trials_show_while_a_study_runs_and_go_back_to_zero(open_server: Server) -> None:
    # one trial at a time: while the second runs, the first has finished
    spec = digits_spec("metrics-live", resources={"max_concurrent": 1},
                       stages={**NO_PROBES, **SEARCH_ONLY, "coarse": {"trials": 2, "epochs": 1},
                               "refine": {"enabled": False}, "confirm": {"enabled": False}})
    before = scrape(open_server.url)
    assert value(before, "stagetune_store_up") == 1
    assert value(before, "stagetune_trials_running") == 0
    with Client(open_server.url) as api:
        api.submit(spec)
        seen_running = seen_rate = 0.0
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            now = scrape(open_server.url)
            seen_running = max(seen_running, value(now, "stagetune_trials_running"))
            seen_rate = max(seen_rate, value(now, "stagetune_trials_per_second"))
            assert value(now, "stagetune_trial_queue_wait_seconds") >= 0
            if api.study("metrics-live").status not in ("pending", "running"):
                break
            time.sleep(0.2)
        study = wait_for_status(api, "metrics-live", ("completed", "stopped", "failed"), 10)
        assert study.status == "completed", study.message
        trials = api.trials("metrics-live", limit=100).total
    assert seen_running >= 1, "no scrape saw a running trial"
    assert seen_rate > 0, "no scrape saw a trial finish while the study ran"
    after = scrape(open_server.url)
    assert value(after, "stagetune_trials_running") == 0
    assert value(after, "stagetune_studies", status="completed") == 1
    assert value(after, "stagetune_studies", status="running") == 0
    assert trials == 2
    # the study's API calls are counted under their route's template, not its name
    routes = {dict(labels)["route"] for (name, labels) in after
              if name == "stagetune_http_requests_total"}
    assert "/api/studies/{study_id}" in routes and "/metrics" in routes
    assert not any("metrics-live" in route for route in routes), routes
    assert value(after, "stagetune_http_requests_total", method="GET",
                 route="/api/studies/{study_id}", status="200") >= 1


def test_request_labels_stay_bounded_and_a_scrape_needs_a_token_when_tokens_are_set() -> None:
    # No lifespan here: the store is not opened, so only the request series (and
    # stagetune_store_up 0) are served; the routing and auth are the app's own.
    app = create_app(Settings(api_tokens="scraper-token,other"))
    with_token = {"Authorization": "Bearer scraper-token"}
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    for i in range(40):  # 40 study names, 40 random paths: one label each, not 80
        assert client.get(f"/api/studies/study-{i}").status_code == 401
        client.get(f"/no/such/path/{i}")
    answer = client.get("/metrics", headers=with_token)
    assert answer.status_code == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(answer.text) for s in family.samples}
    routes = {dict(labels)["route"] for (name, labels) in samples
              if name == "stagetune_http_requests_total"}
    assert routes == {"/api/studies/{study_id}", "unmatched", "/metrics"}, routes
    assert samples["stagetune_http_requests_total",
                   (("method", "GET"), ("route", "unmatched"), ("status", "404"))] == 40
    assert samples["stagetune_store_up", ()] == 0


@pytest.mark.slow
def test_the_ray_dashboard_opt_in_without_rays_full_install_is_one_line(tmp_path: Path) -> None:
    try:
        import ray.dashboard.optional_deps  # noqa: F401
        pytest.skip("ray[default] is installed here: the dashboard would start")
    except ImportError:
        pass
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: dash\ntask: {dataset: digits, model: convnet}\n"
                    "space: {lr: {type: float, low: 0.001, high: 0.1, log: true}}\n")
    done = subprocess.run([STAGETUNE, "run", str(spec), "--db", f"sqlite:///{tmp_path / 's.db'}"],
                          env={**os.environ, "STAGETUNE_RAY_DASHBOARD": "true"}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    assert "STAGETUNE_RAY_DASHBOARD is on" in done.stderr
    assert "pip install 'stagetune[ray-dashboard]'" in done.stderr, done.stderr
